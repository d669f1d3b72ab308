"""Saving and loading a trained model pair.

A model directory holds ``condscvi.pt`` and ``destvi.pt`` (state dicts, read back with
``torch.load(..., weights_only=True)``) and ``metadata.json``: versions, seed, every
hyper-parameter, genes, cell types, training histories and SHA-256 digests of the input count
matrices and labels, so that loading against other data fails with a clear message. It also
holds ``proportions.npy``, the proportions at save time, readable without torch
(:mod:`destvi_core.model_files`).
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from anndata import AnnData

from .condscvi import CondSCVI, CondSCVIModule
from .data import hash_matrix
from .device import resolve_device
from .destvi import DestVI, DestVIModule
from .errors import CorruptedModelError, ModelMismatchError
from .model_files import (FORMAT_VERSION, META_FILE, PROPORTIONS_FILE, SC_FILE, ST_FILE,  # noqa: F401
                          read_metadata, read_proportions, write_proportions)
from .tensors import counts_matrix


def package_version() -> str:
    from . import __version__
    return __version__


def environment_versions() -> dict:
    """Versions that matter for reproducing a result."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"destvi_studio": package_version(), "python": platform.python_version()}
    for pkg in ("torch", "numpy", "scipy", "pandas", "anndata", "scikit-learn", "gseapy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def hash_strings(values) -> str:
    """SHA-256 of a sequence of strings (names, labels)."""
    digest = hashlib.sha256()
    for v in values:
        digest.update(str(v).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def data_fingerprint(sc_adata: AnnData, st_adata: AnnData, labels_key: str,
                     sc_layer: str | None = None, st_layer: str | None = None) -> dict:
    """Digests of everything a trained pair depends on in the data."""
    return {
        "sc_counts_sha256": hash_matrix(counts_matrix(sc_adata, sc_layer)),
        "st_counts_sha256": hash_matrix(counts_matrix(st_adata, st_layer)),
        "sc_labels_sha256": hash_strings(sc_adata.obs[labels_key].astype(str)),
        "genes_sha256": hash_strings(sc_adata.var_names),
        "n_cells": int(sc_adata.n_obs), "n_spots": int(st_adata.n_obs),
        "n_genes": int(sc_adata.n_vars),
    }


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def build_metadata(sc_model: CondSCVI, st_model: DestVI, extra: dict | None = None) -> dict:
    """Metadata that travels with a saved pair and with every export."""
    meta = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": environment_versions(),
        "seed": sc_model.seed,
        "labels_key": sc_model.labels_key,
        "cell_types": sc_model.cell_types,
        "genes": sc_model.genes,
        "condscvi": {"hparams": sc_model.hparams, "train": sc_model.train_params,
                     "seed": sc_model.seed, "history": sc_model.history},
        "destvi": {"hparams": st_model.hparams, "train": st_model.train_params,
                   "seed": st_model.seed, "history": st_model.history,
                   "prior_shape": list(st_model.module.mean_vprior.shape)
                   if st_model.module.use_vamp else None},
        "data": data_fingerprint(sc_model.adata, st_model.adata, sc_model.labels_key,
                                 sc_model.layer, st_model.layer),
        "layers": {"sc": sc_model.layer, "st": st_model.layer},
    }
    if extra:
        meta["extra"] = extra
    return _json_safe(meta)


def save_models(directory: str | Path, sc_model: CondSCVI, st_model: DestVI,
                extra_metadata: dict | None = None) -> Path:
    """Write the trained pair to ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in sc_model.module.state_dict().items()}, directory / SC_FILE)
    torch.save({k: v.cpu() for k, v in st_model.module.state_dict().items()}, directory / ST_FILE)
    meta = build_metadata(sc_model, st_model, extra_metadata)
    (directory / META_FILE).write_text(json.dumps(meta, indent=1))
    write_proportions(directory, st_model.get_proportions())
    return directory


def reference_fingerprint(sc_adata: AnnData, labels_key: str, sc_layer: str | None = None) -> dict:
    """Digests of everything a trained reference model depends on in the data."""
    return {
        "sc_counts_sha256": hash_matrix(counts_matrix(sc_adata, sc_layer)),
        "sc_labels_sha256": hash_strings(sc_adata.obs[labels_key].astype(str)),
        "genes_sha256": hash_strings(sc_adata.var_names),
        "n_cells": int(sc_adata.n_obs), "n_genes": int(sc_adata.n_vars),
    }


def save_reference(directory: str | Path, sc_model: CondSCVI,
                   extra_metadata: dict | None = None) -> Path:
    """Write a trained reference model alone (``condscvi.pt`` + ``metadata.json`` with
    ``kind: "reference"``): the part shared by every section trained from it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in sc_model.module.state_dict().items()}, directory / SC_FILE)
    meta = {
        "format_version": FORMAT_VERSION, "kind": "reference",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": environment_versions(), "seed": sc_model.seed,
        "labels_key": sc_model.labels_key, "cell_types": sc_model.cell_types,
        "genes": sc_model.genes,
        "condscvi": {"hparams": sc_model.hparams, "train": sc_model.train_params,
                     "seed": sc_model.seed, "history": sc_model.history},
        "data": reference_fingerprint(sc_model.adata, sc_model.labels_key, sc_model.layer),
        "layers": {"sc": sc_model.layer},
    }
    if extra_metadata:
        meta["extra"] = extra_metadata
    (directory / META_FILE).write_text(json.dumps(_json_safe(meta), indent=1))
    return directory


def load_reference(directory: str | Path, sc_adata: AnnData,
                   device: str | torch.device = "auto") -> CondSCVI:
    """Load a reference saved by :func:`save_reference` (or the reference half of a pair)
    against its data.

    Raises
    ------
    ModelMismatchError
        The reference data are not those the model was trained on.
    CorruptedModelError
        The folder is incomplete or unreadable.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    genes = [str(g) for g in sc_adata.var_names]
    if genes != meta["genes"]:
        raise ModelMismatchError(
            f"the reference model was trained on {len(meta['genes'])} genes but the reference "
            f"has {len(genes)} ({len(set(genes) & set(meta['genes']))} shared). Fix: prepare "
            "the data with the same genes or retrain")
    if meta["labels_key"] not in sc_adata.obs:
        raise ModelMismatchError(f"the reference has no {meta['labels_key']!r} column the model "
                                 "was trained with. Fix: pick the same label column or retrain")
    fp = reference_fingerprint(sc_adata, meta["labels_key"], meta["layers"]["sc"])
    for key, what in [("sc_counts_sha256", "reference counts"),
                      ("sc_labels_sha256", "reference labels")]:
        if fp[key] != meta["data"][key]:
            raise ModelMismatchError(f"the {what} differ from those the reference model was "
                                     "trained on. Fix: load the original data or retrain")
    sc_meta = meta["condscvi"]
    hparams = {**sc_meta["hparams"], "init": "reference"}  # weights replace any init
    sc_model = CondSCVI(sc_adata, labels_key=meta["labels_key"], layer=meta["layers"]["sc"],
                        seed=sc_meta["seed"], device=resolve_device(device), **hparams)
    sc_model.hparams = dict(sc_meta["hparams"])
    if sc_model.cell_types != list(meta["cell_types"]):
        raise ModelMismatchError(f"the reference model knows cell types {meta['cell_types']} "
                                 f"but the reference has {sc_model.cell_types}. Fix: use the "
                                 "same reference and label column, or retrain")
    try:
        sc_model.module.load_state_dict(_load_state(directory / SC_FILE))
    except RuntimeError as err:
        raise CorruptedModelError(f"the weights in {directory} do not fit the model described by "
                                  f"its metadata ({str(err).splitlines()[0]}). Fix: retrain") from err
    sc_model.module.eval()
    sc_model.history = list(sc_meta["history"])
    sc_model.train_params = dict(sc_meta["train"])
    sc_model.is_trained = True
    return sc_model


def check_compatible(meta: dict, sc_adata: AnnData, st_adata: AnnData) -> None:
    """Raise :class:`ModelMismatchError` saying how the data differ from the model's."""
    labels_key = meta["labels_key"]
    genes = [str(g) for g in sc_adata.var_names]
    if genes != meta["genes"] or [str(g) for g in st_adata.var_names] != meta["genes"]:
        shared = len(set(genes) & set(meta["genes"]))
        raise ModelMismatchError(
            f"the model was trained on {len(meta['genes'])} genes but the data has "
            f"{sc_adata.n_vars} (reference) / {st_adata.n_vars} (spatial), {shared} shared. "
            "Fix: load the data the model was trained on, with the same preprocessing, or retrain")
    if labels_key not in sc_adata.obs:
        raise ModelMismatchError(f"the reference has no {labels_key!r} column the model was "
                                 "trained with. Fix: pick the same label column or retrain")
    types = sorted(set(sc_adata.obs[labels_key].astype(str)))
    if types != sorted(meta["cell_types"]):
        raise ModelMismatchError(
            f"the model knows cell types {meta['cell_types']} but the reference has {types}. "
            "Fix: use the same reference and label column, or retrain")
    fp = data_fingerprint(sc_adata, st_adata, labels_key, meta["layers"]["sc"],
                          meta["layers"]["st"])
    for key, what in [("sc_counts_sha256", "reference counts"), ("st_counts_sha256", "spatial counts"),
                      ("sc_labels_sha256", "reference labels")]:
        if fp[key] != meta["data"][key]:
            raise ModelMismatchError(f"the {what} differ from those the model was trained on. "
                                     "Fix: load the original data or retrain the model")


def _load_state(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise CorruptedModelError(f"{path.name} is missing from {path.parent}. "
                                  "Fix: retrain the model") from err
    except Exception as err:  # truncated zip, pickle error, ...
        raise CorruptedModelError(f"{path} is corrupted ({type(err).__name__}). "
                                  "Fix: retrain the model") from err


def load_models(directory: str | Path, sc_adata: AnnData, st_adata: AnnData,
                device: str | torch.device = "auto", check_data: bool = True
                ) -> tuple[CondSCVI, DestVI]:
    """Load a saved pair against its data.

    Raises
    ------
    ModelMismatchError
        The data are not those the model was trained on (genes, types, counts).
    CorruptedModelError
        The directory is incomplete, truncated or from an incompatible version.
    """
    directory = Path(directory)
    meta = read_metadata(directory)
    if check_data:
        check_compatible(meta, sc_adata, st_adata)
    device = resolve_device(device)
    sc_meta, st_meta = meta["condscvi"], meta["destvi"]
    # the saved weights replace any initialisation: skip the data-scaled one (a pass over the counts)
    hparams = {**sc_meta["hparams"], "init": "reference"}
    sc_model = CondSCVI(sc_adata, labels_key=meta["labels_key"], layer=meta["layers"]["sc"],
                        seed=sc_meta["seed"], device=device, **hparams)
    sc_model.hparams = dict(sc_meta["hparams"])
    sc_model.cell_types = list(meta["cell_types"])
    lookup = {c: i for i, c in enumerate(sc_model.cell_types)}
    sc_model.labels = sc_adata.obs[meta["labels_key"]].astype(str).map(lookup).to_numpy().astype(np.int64)
    try:
        sc_model.module.load_state_dict(_load_state(directory / SC_FILE))
        hp = sc_model.hparams
        shape = st_meta["prior_shape"]
        prior = None if shape is None else (np.zeros(shape), np.ones(shape), np.ones(shape[:2]))
        module = DestVIModule(sc_model.module, st_adata.n_obs, hp["n_latent"], hp["n_hidden"],
                              prior, **_module_kwargs(st_meta["hparams"]))
        module.load_state_dict(_load_state(directory / ST_FILE))
    except RuntimeError as err:  # shape mismatch in load_state_dict
        raise CorruptedModelError(f"the weights in {directory} do not fit the model described by "
                                  f"its metadata ({str(err).splitlines()[0]}). Fix: retrain") from err
    module.to(device).eval()
    sc_model.module.eval()
    st_model = DestVI(st_adata, sc_model, module, meta["layers"]["st"], st_meta["hparams"],
                      st_meta["seed"], device)
    for model, m in ((sc_model, sc_meta), (st_model, st_meta)):
        model.history = list(m["history"])
        model.train_params = dict(m["train"])
        model.is_trained = True
    return sc_model, st_model


def _module_kwargs(hparams: dict) -> dict:
    keys = ("amortization", "l1_reg", "beta_reg", "eta_reg", "dropout_amortization")
    return {k: hparams[k] for k in keys if k in hparams}
