"""The HTTP API: `create_app()` builds it; one router per resource."""

from scheduler.api.app import create_app

__all__ = ["create_app"]
