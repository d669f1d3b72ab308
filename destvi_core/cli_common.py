"""What every CLI command module shares: exit codes, messages, warning collection."""

from __future__ import annotations

EXIT_ERROR = 2
EXIT_CANCELLED = 130
CANCELLED_MESSAGE = "Training cancelled; nothing was written"


def _collected_warnings(caught, already: list[str] = ()) -> list[str]:
    """Messages of the DestVIWarnings in ``caught`` not already reported (order kept)."""
    from .errors import DestVIWarning

    seen = set(already)
    out = []
    for item in caught:
        if issubclass(item.category, DestVIWarning):
            msg = str(item.message)
            if msg not in seen:
                seen.add(msg)
                out.append(msg)
    return out
