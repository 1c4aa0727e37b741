"""Marketing campaigns as durable Temporal workflows."""
