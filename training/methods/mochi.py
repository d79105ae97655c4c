"""mochi (being written)."""
