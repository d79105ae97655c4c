"""hcl (being written)."""
