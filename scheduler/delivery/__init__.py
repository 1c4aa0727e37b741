"""Delivery: the activities that send, the channels, templates and their renderer, unsubscribe links.

May import the store and the ground floor.
"""
