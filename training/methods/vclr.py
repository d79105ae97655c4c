"""vclr (being written)."""
