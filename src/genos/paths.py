"""Where GenOS keeps its state on the host (``GENOS_DATA_DIR``, default ``/var/lib/genos``)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/genos")


def data_dir() -> Path:
    """The data directory: ``GENOS_DATA_DIR`` if set, else ``/var/lib/genos``."""
    configured = os.environ.get("GENOS_DATA_DIR", "").strip()
    return Path(configured) if configured else DEFAULT_DATA_DIR
