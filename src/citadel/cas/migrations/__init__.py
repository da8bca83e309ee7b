"""Alembic migrations of the CAS database (run by `citadel cas serve` and `citadel cas migrate`)."""
