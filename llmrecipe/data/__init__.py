"""Data operations on polars frames, and locating source files (the latter without polars)."""
