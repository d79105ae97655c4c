"""Thin click layers over the runtime's facades (imports inside commands keep --help instant)."""
