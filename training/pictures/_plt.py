"""matplotlib, imported where used, headless, with an error that says which extra installs it."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    try:
        import matplotlib
    except ImportError as exc:
        from vcl_infer.errors import MissingDependency

        raise MissingDependency(
            f"pictures need matplotlib ({exc}); install it with: pip install 'vcl[train]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
