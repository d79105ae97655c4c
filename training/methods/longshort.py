"""longshort (being written)."""
