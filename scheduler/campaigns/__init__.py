"""Campaigns as code: campaign files, their cron and schedules, reconcile, status and stats, stop, fan-out.

May import the store, delivery (templates, checked when a file loads), the audience and the ground floor.
"""
