"""cyclecontrast (being written)."""
