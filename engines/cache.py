"""Where mer keeps files it derives and can always rebuild (TensorRT plans, parsed landmark models).

``$MER_CACHE``, else ``$XDG_CACHE_HOME/mer``, else ``~/.cache/mer``: one root, so a user who
wants it elsewhere (a read-only home, a shared volume) sets one variable.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["mer_cache_dir"]


def mer_cache_dir() -> Path:
    """The root of mer's cache (not created here)."""
    if os.environ.get("MER_CACHE"):
        return Path(os.environ["MER_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mer"
