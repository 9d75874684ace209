"""Interactive exploration of a finished run (notebooks/explore.py, `make lab`).

Submodules:

- `session`: :class:`Explorer`, a run opened for browsing with plain methods that return data
  (``filter``, ``confusion``, ``select``, ``explain``, ``upload``); :func:`latest_run`.
- `widgets`: :class:`ExplorerApp`, the ipywidgets layer that only calls the explorer.
"""

from brainmri.explore.session import (
    SCORECAM_CHANNELS,
    Explanation,
    Explorer,
    Selection,
    finished_runs,
    latest_run,
)

__all__ = [
    "SCORECAM_CHANNELS",
    "Explanation",
    "Explorer",
    "Selection",
    "finished_runs",
    "latest_run",
]
