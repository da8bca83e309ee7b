"""Sealing: turn a directory tree into a sealed image, and read one back (engine side)."""
