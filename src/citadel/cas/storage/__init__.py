"""Persistence: SQLAlchemy tables (`models`), engines and migrations (`db`), queries (`repo`)."""
