"""Content-addressed on-disk cache of trained model pairs.

An entry is a directory ``<root>/<key>`` written by :func:`destvi_core.persistence.save_models`;
the key is a SHA-256 over the data (counts, labels, gene/cell/spot names) and a canonical JSON of
the training parameters, so retraining with identical inputs is a cache hit. Entries are written
to a temporary directory inside the root and moved into place with ``os.replace`` (atomic on one
file system): readers never see half-written entries, and when two processes train the same
key concurrently the second one simply discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from .data import hash_matrix
from .errors import DestVIWarning
from .model_files import read_metadata, read_proportions, write_files

CACHE_ENV = "DESTVI_STUDIO_CACHE"
"""Environment variable overriding the default cache root (``~/.cache/destvi-studio``)."""

_TMP_PREFIX = ".tmp-"
_DEMO_DIR = "demo"  # the prepared built-in demo lives next to the entries (not an entry)
_REFERENCES_DIR = "references"  # reference models alone, shared by every section (not entries)
_NOT_ENTRIES = (_DEMO_DIR, _REFERENCES_DIR)


def default_root() -> Path:
    """Cache root: ``$DESTVI_STUDIO_CACHE`` if set, else ``~/.cache/destvi-studio``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "destvi-studio"


def _canonical_json(params: dict) -> str:
    """JSON with sorted keys; numpy scalars/arrays, tuples and paths normalised."""
    def default(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        return str(obj)
    return json.dumps(params, sort_keys=True, default=default, separators=(",", ":"))


def _hash_strings(digest, values) -> None:
    for value in values:
        digest.update(str(value).encode("utf-8"))
        digest.update(b"\0")
    digest.update(b"\1")


def data_digest(sc: AnnData, st: AnnData, labels_key: str, sc_hash: str | None = None) -> str:
    """SHA-256 of everything a trained pair depends on in the data.

    Covers the count matrices in X (:func:`~destvi_core.data.hash_matrix`: values + shape),
    the labels, gene names, cell and spot names. Compute it once per dataset and pass it to
    :func:`cache_key` for every parameter set. ``sc_hash``: ``hash_matrix(sc.X)`` when already
    known (several sections with one reference).
    """
    digest = hashlib.sha256()
    digest.update((sc_hash or hash_matrix(sc.X)).encode())
    digest.update(hash_matrix(st.X).encode())
    digest.update(labels_key.encode() + b"\0")
    _hash_strings(digest, sc.obs[labels_key].astype(str))
    _hash_strings(digest, sc.var_names)
    _hash_strings(digest, st.var_names)
    _hash_strings(digest, sc.obs_names)
    _hash_strings(digest, st.obs_names)
    return digest.hexdigest()


def cache_key(sc: AnnData, st: AnnData, labels_key: str, params: dict,
              digest: str | None = None) -> str:
    """SHA-256 key of a (reference, spatial, labels, parameters) combination.

    Parameters
    ----------
    sc, st
        Prepared reference and spatial data (counts in X).
    labels_key
        Reference label column.
    params
        Training parameters that affect the weights (JSON-serialisable).
    digest
        :func:`data_digest` of ``(sc, st, labels_key)`` when already known (saves re-hashing).

    Returns
    -------
    str
        64-character hex digest.
    """
    key = hashlib.sha256()
    key.update(b"destvi-studio-cache-v2\0")
    key.update((digest or data_digest(sc, st, labels_key)).encode())
    key.update(_canonical_json(params).encode())
    return key.hexdigest()


key_for = cache_key
"""Alias of :func:`cache_key` (name used in the module contract)."""


def reference_digest(sc: AnnData, labels_key: str) -> str:
    """SHA-256 of everything a reference model depends on in the data: counts, labels, gene
    and cell names (not the spatial data: one reference serves every section)."""
    digest = hashlib.sha256()
    digest.update(b"reference\0")
    digest.update(hash_matrix(sc.X).encode())
    digest.update(labels_key.encode() + b"\0")
    _hash_strings(digest, sc.obs[labels_key].astype(str))
    _hash_strings(digest, sc.var_names)
    _hash_strings(digest, sc.obs_names)
    return digest.hexdigest()


def reference_key(sc: AnnData, labels_key: str, params: dict, digest: str | None = None) -> str:
    """SHA-256 key of a reference model: its data (:func:`reference_digest`) and the
    parameters that shape it (:func:`destvi_core.pipeline.reference_cache_dict`)."""
    key = hashlib.sha256()
    key.update(b"destvi-studio-reference-v1\0")
    key.update((digest or reference_digest(sc, labels_key)).encode())
    key.update(_canonical_json(params).encode())
    return key.hexdigest()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class ModelCache:
    """Directory of trained model pairs keyed by :func:`cache_key`.

    Parameters
    ----------
    root
        Cache folder (created on first write); default :func:`default_root`.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    def key_for(self, sc: AnnData, st: AnnData, labels_key: str, params: dict) -> str:
        """See :func:`cache_key`."""
        return cache_key(sc, st, labels_key, params)

    def path(self, key: str) -> Path:
        """Directory of the entry ``key`` (may not exist)."""
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"invalid cache key {key!r}")
        return self.root / key

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_dir()

    def reference_path(self, key: str) -> Path:
        """Directory of the reference model ``key`` (may not exist)."""
        return self.root / _REFERENCES_DIR / self.path(key).name

    def has_reference(self, key: str) -> bool:
        return self.reference_path(key).is_dir()

    def put_files(self, key: str, files: dict[str, bytes], reference: bool = False) -> Path:
        """Store a model folder received as ``{file name: bytes}`` atomically under ``key``
        (a pair entry, or a reference model with ``reference=True``).

        The files are written to a temporary directory inside the root and renamed into
        place, as :meth:`put` does: a reader never sees a half-written entry, and if the entry
        already exists (another writer got there first) the copy is discarded.
        """
        dest = self.reference_path(key) if reference else self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=dest.parent))
        try:
            write_files(tmp, files)
            if dest.exists():
                return dest
            try:
                os.replace(tmp, dest)
            except OSError:
                if not dest.exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def proportions(self, key: str, spot_names, meta: dict | None = None) -> pd.DataFrame | None:
        """Proportions saved with the entry, without loading the models (or torch).

        ``None`` when there is no such entry or its ``proportions.npy`` is absent or does not
        fit ``spot_names`` (see :func:`~destvi_core.model_files.read_proportions`). ``meta``:
        the entry's metadata when already read.
        """
        entry = self.path(key)
        return read_proportions(entry, spot_names, meta) if entry.is_dir() else None

    def get(self, key: str, sc_adata: AnnData, st_adata: AnnData, device="auto"):
        """Load the pair stored under ``key``, or ``None`` if there is none.

        A corrupted or mismatching entry is removed with a DestVIWarning and ``None`` is
        returned, so the caller retrains.

        Parameters
        ----------
        key
            Cache key.
        sc_adata, st_adata
            Data the models are loaded against.
        device
            Torch device (``"auto"``, ``"cpu"``, ...).

        Returns
        -------
        tuple or None
            ``(sc_model, st_model)`` from :func:`persistence.load_models`.
        """
        from . import persistence  # imports torch: only when models are really loaded

        entry = self.path(key)
        if not entry.is_dir():
            return None
        try:
            return persistence.load_models(entry, sc_adata, st_adata, device)
        except Exception as err:  # corrupted files, mismatch, incompatible version...
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            shutil.rmtree(entry, ignore_errors=True)
            warnings.warn(f"cache entry {key[:12]} was corrupted ({reason[:300]}); it was removed "
                          "and the model will be retrained", DestVIWarning, stacklevel=2)
            return None

    def put(self, key: str, sc_model, st_model, metadata: dict | None = None) -> Path:
        """Store a trained pair atomically under ``key``.

        The pair is written by :func:`persistence.save_models` to a temporary directory inside
        the root, then renamed to ``root/key``. If the entry already exists (another writer got
        there first) the temporary copy is discarded.

        Parameters
        ----------
        key
            Cache key.
        sc_model, st_model
            Trained CondSCVI and DestVI models.
        metadata
            Extra metadata stored with the models (e.g. training parameters).

        Returns
        -------
        Path
            The entry directory.
        """
        from . import persistence

        dest = self.path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=self.root))
        try:
            persistence.save_models(tmp, sc_model, st_model, dict(metadata or {},
                                                                  cache_key=key))
            if dest.exists():
                return dest
            try:
                os.replace(tmp, dest)
            except OSError:
                if not dest.exists():  # a real failure, not a concurrent writer
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    def keys(self) -> list[str]:
        """Keys of the stored entries (temporary directories excluded)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and p.name not in _NOT_ENTRIES)

    def list(self) -> pd.DataFrame:
        """One row per entry: key, created, size (MB), data sizes, cell types, epochs.

        Entries whose metadata cannot be read are listed with ``status='corrupted'``.
        """
        columns = ["key", "created", "size_mb", "n_cells", "n_spots", "n_genes",
                   "cell_types", "sc_epochs", "st_epochs", "status", "path"]
        rows = [self._describe(key) for key in self.keys()]
        table = pd.DataFrame(rows, columns=columns)
        return table.sort_values("created", ascending=False, na_position="last",
                                 ignore_index=True) if len(table) else table

    def _describe(self, key: str) -> dict:
        entry = self.path(key)
        row = {"key": key, "size_mb": round(_dir_size(entry) / 2 ** 20, 3),
               "path": str(entry), "status": "ok"}
        try:
            meta = read_metadata(entry)
        except Exception:
            row["status"] = "corrupted"
            return row
        data = meta.get("data", {})
        row.update(created=meta.get("created"), n_cells=data.get("n_cells"),
                   n_spots=data.get("n_spots"), n_genes=data.get("n_genes"),
                   cell_types=", ".join(map(str, meta.get("cell_types", []))),
                   sc_epochs=_epochs(meta.get("condscvi", {})),
                   st_epochs=_epochs(meta.get("destvi", {})))
        return row

    def clear(self, key: str | None = None) -> int:
        """Remove one entry (``key``) or everything: entries, reference models, leftover
        temporary directories and the prepared demo (rebuilt on demand).

        Returns
        -------
        int
            Number of entries removed.
        """
        if key is not None:
            entry = self.path(key)
            if entry.is_dir():
                shutil.rmtree(entry)
                return 1
            return 0
        if not self.root.is_dir():
            return 0
        removed = 0
        for child in self.root.iterdir():
            if child.is_dir():
                removed += not child.name.startswith(".") and child.name not in _NOT_ENTRIES
                shutil.rmtree(child, ignore_errors=True)
        return removed


def _epochs(model_meta: dict):
    """Epochs actually trained (history length) or the requested number."""
    history = model_meta.get("history")
    if isinstance(history, list) and history:
        return len(history)
    train = model_meta.get("train") or {}
    return train.get("max_epochs")


def _demo_folder(seed: int, root: str | Path | None) -> Path:
    from . import __version__

    return Path(root or default_root()) / _DEMO_DIR / f"v{__version__}-seed{seed}"


def prepared_demo_digest(seed: int = 0, root: str | Path | None = None) -> str | None:
    """:func:`data_digest` of the prepared demo, recorded when it was built (None if unknown),
    so opening the app with a cached model does not hash the demo again."""
    try:
        digest = json.loads((_demo_folder(seed, root) / "info.json").read_text())["data_digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) and len(digest) == 64 else None


def prepared_demo(seed: int = 0, root: str | Path | None = None):
    """The built-in demo after :func:`~destvi_core.data.prepare_inputs`, cached on disk.

    Building and preparing the demo takes several seconds; the prepared pair is stored once
    under ``<cache root>/demo/`` (written atomically) and read back in well under a second.

    Returns
    -------
    ``(sc, st, report: dict, messages: list[str], gene_sets: dict)``
    """
    import dataclasses

    import anndata as ad

    from .data import prepare_inputs
    from .simulate import demo_dataset

    folder = _demo_folder(seed, root)
    try:
        info = json.loads((folder / "info.json").read_text())
        return (ad.read_h5ad(folder / "sc.h5ad"), ad.read_h5ad(folder / "st.h5ad"),
                info["report"], info["messages"], info["gene_sets"])
    except (OSError, ValueError, KeyError):
        pass  # not built yet (or damaged): build it again
    sim = demo_dataset(seed=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DestVIWarning)
        prepared = prepare_inputs(sim.sc, sim.st, labels_key="cell_type")
    messages = list(dict.fromkeys(str(w.message) for w in caught
                                  if issubclass(w.category, DestVIWarning)))
    report = dataclasses.asdict(prepared.report)
    info = {"report": report, "messages": messages, "gene_sets": dict(sim.gene_sets),
            "data_digest": data_digest(prepared.sc, prepared.st, "cell_type")}
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        prepared.sc.write_h5ad(tmp / "sc.h5ad")
        prepared.st.write_h5ad(tmp / "st.h5ad")
        (tmp / "info.json").write_text(json.dumps(info, default=str))
        if folder.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except OSError:
        pass  # a read-only cache only costs speed
    return prepared.sc, prepared.st, report, messages, info["gene_sets"]
