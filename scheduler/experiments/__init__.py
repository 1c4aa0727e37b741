"""Experiments: the results of a campaign's split steps, and the statistics that keep them honest when a team
looks every day (always-valid inference, sample ratio mismatch, verdicts in words).

May import campaigns, the store and the ground floor.
"""
