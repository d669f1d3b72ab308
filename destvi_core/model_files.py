"""What a saved model folder contains, readable without importing torch.

A model folder (written by :func:`destvi_core.persistence.save_models`) holds the two state
dicts, ``metadata.json`` and ``proportions.npy`` — the spot x cell-type proportions the DestVI
model gave when it was saved. The app draws its first maps from that file while the models
themselves (and torch) load in the background.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CorruptedModelError

FORMAT_VERSION = 1
SC_FILE, ST_FILE, META_FILE = "condscvi.pt", "destvi.pt", "metadata.json"
PROPORTIONS_FILE = "proportions.npy"


def read_metadata(directory: str | Path) -> dict:
    """The metadata of a saved model; :class:`CorruptedModelError` if missing or unreadable."""
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CorruptedModelError(f"{directory} is not a DestVI Studio model directory "
                                  f"({META_FILE} is missing). Fix: choose the folder written by "
                                  "'train' or the app") from err
    except (OSError, ValueError) as err:
        raise CorruptedModelError(f"the model metadata in {directory} is unreadable ({err}). "
                                  "Fix: retrain the model") from err
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CorruptedModelError(f"{directory} was written by an incompatible version "
                                  f"(format {meta.get('format_version') if isinstance(meta, dict) else '?'}). "
                                  "Fix: retrain the model")
    return meta


def write_proportions(directory: str | Path, proportions: pd.DataFrame) -> None:
    """Store the spot x type proportions (float32, exact) next to the weights."""
    np.save(Path(directory) / PROPORTIONS_FILE,
            np.ascontiguousarray(proportions.to_numpy(), dtype=np.float32), allow_pickle=False)


def read_proportions(directory: str | Path, spot_names, meta: dict | None = None
                     ) -> pd.DataFrame | None:
    """Saved proportions as a DataFrame (index ``spot_names``, columns = the model's types).

    Returns ``None`` when the file is absent (older folders), unreadable, or does not fit
    (shape, non-finite values, rows not summing to 1): callers then compute the proportions
    from the loaded model instead. Never raises for a damaged file. ``meta``: the folder's
    metadata when the caller has already read it.
    """
    directory = Path(directory)
    try:
        meta = meta if meta is not None else read_metadata(directory)
        types = [str(t) for t in meta["cell_types"]]
        values = np.load(directory / PROPORTIONS_FILE, allow_pickle=False)
    except (CorruptedModelError, OSError, ValueError, KeyError, TypeError):
        return None
    spot_names = pd.Index(spot_names).astype(str)
    if (values.ndim != 2 or values.shape != (len(spot_names), len(types))
            or not np.isfinite(values).all() or not np.allclose(values.sum(1), 1.0, atol=1e-3)):
        return None
    return pd.DataFrame(values, index=spot_names, columns=types)


def folder_files(directory: str | Path) -> dict[str, bytes]:
    """Every file of a model folder (flat) as ``{name: bytes}``: how a trained model travels
    from a worker that may not share the app's file system back to the cache."""
    directory = Path(directory)
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def write_files(directory: str | Path, files: dict[str, bytes]) -> Path:
    """Write ``{name: bytes}`` (from :func:`folder_files`) into ``directory`` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise CorruptedModelError(f"invalid file name {name!r} in a model transfer")
        (directory / name).write_bytes(payload)
    return directory
