"""Replies: routing a customer's reply or a conversion to its flows, and the keywords (STOP, START, HELP).

May import campaigns, delivery, the store and the ground floor.
"""
