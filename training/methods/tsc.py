"""tsc (being written)."""
