"""Alembic migrations of the service's database (`scheduler.store`), applied by `Store.open`.

Each revision in `versions/` is written by hand (no autogenerate): they run on SQLite and PostgreSQL.
"""
