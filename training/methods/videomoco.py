"""videomoco (being written)."""
