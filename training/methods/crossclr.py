"""crossclr (being written)."""
