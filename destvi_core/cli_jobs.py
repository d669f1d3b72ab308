"""CLI commands that train through jobs: several sections, seed ensembles, a Dask cluster.

``train`` comes here (from :func:`destvi_core.cli.cmd_train`) when it is given several
sections (``--st A --st B``, ``--st-dir``, ``--section-key``), ``--seeds N`` above 1, or a
scheduler (``--scheduler``, ``$DESTVI_STUDIO_SCHEDULER``). Layout written::

    MODEL_DIR/sections.json            the sections, their files, conditions, preprocessing
    MODEL_DIR/<section>/               a complete model folder per section (export works on it)
    MODEL_DIR/<section>/ensemble/seed-<k>/   the other seeds of a seed ensemble

With a single ``--st`` (and ``--seeds``/``--scheduler``) the model folder is MODEL_DIR itself,
as without jobs. ``export --model MODEL_DIR`` on a multi-section folder writes one h5ad of all
sections with ``obs['section']`` (and ``obs['condition']`` when known).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

MANIFEST = "sections.json"
ENSEMBLE_DIR = "ensemble"


def uses_jobs(args) -> bool:
    """Whether ``train`` runs through the job layer (see the module docstring)."""
    from .cluster import scheduler_address

    return (len(args.st or []) > 1 or bool(args.st_dir) or bool(args.section_key)
            or (args.seeds or 1) > 1 or bool(scheduler_address(args.scheduler))
            or bool(args.workers))


# ============================================================================================
# train
# ============================================================================================

def _read_sections(args, pre: dict) -> tuple[dict, dict[str, str | None], dict]:
    """``(sections, {name: source file}, {name: {"key", "value"}} for obs-split sections)``."""
    from .data import read_spatial
    from .errors import InputError
    from .sections import find_section_files, read_sections, split_sections

    paths = [Path(p) for p in (args.st or [])]
    if args.st_dir:
        paths += find_section_files(args.st_dir)
    if not paths:
        raise InputError("no spatial data was given", "pass --st FILE (several times for several "
                         "sections) or --st-dir FOLDER")
    if args.section_key:
        if len(paths) != 1:
            raise InputError("--section-key splits ONE spatial file into sections, but "
                             f"{len(paths)} were given", "pass a single --st with --section-key")
        whole = read_spatial(paths[0], pre.get("bin_size"), pre.get("layer_st"))
        raw = {str(v): str(v) for v in whole.obs[args.section_key].astype(str).unique()} \
            if args.section_key in whole.obs else {}
        sections = split_sections(whole, args.section_key)
        from .sections import _safe

        origin = {_safe(v): {"key": args.section_key, "value": v} for v in raw}
        return sections, {name: str(paths[0].resolve()) for name in sections}, origin
    sections = read_sections(paths, pre.get("bin_size"), pre.get("layer_st"))
    return sections, {n: str(p.resolve()) for n, p in zip(sections, paths)}, {}


def _model_folder(out: Path, name: str, multi: bool) -> Path:
    return out / name if multi else out


def _write_model(entry: Path, dest: Path, extra: dict) -> None:
    """Copy a cache entry to ``dest`` (atomically) with ``extra`` merged into its metadata."""
    from .model_files import META_FILE

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        for item in entry.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        meta = json.loads((tmp / META_FILE).read_text())
        meta["extra"] = {**(meta.get("extra") or {}), **extra}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        keep = [p for p in dest.iterdir() if p.is_dir()] if dest.is_dir() else []
        for sub in keep:  # an ensemble folder written earlier stays
            shutil.move(str(sub), tmp / sub.name)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.replace(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _JobsProgress:
    """One tqdm bar over all jobs' epochs, and a line whenever a job ends."""

    def __init__(self, jobs: list, stream=None):
        from tqdm import tqdm

        self.jobs = jobs
        self.refs = list({id(j.reference): j.reference for j in jobs if j.reference}.values())
        self.all = self.refs + jobs
        self.total = sum(j.n_epochs for j in self.all if not j.from_cache)
        self.stream = stream or sys.stderr
        self.bar = tqdm(total=max(self.total, 1), desc="Training", unit="epoch",
                        file=self.stream, dynamic_ncols=True)
        self.reported: set[str] = set()

    def update(self) -> None:
        done = 0
        for job in self.all:
            if job.from_cache:
                continue
            p = job.progress
            epochs = job.n_epochs if job.state == "done" else (
                p.epoch if p is not None and (job.kind == "reference" or p.model == "destvi") else 0)
            done += min(epochs, job.n_epochs)
            if not job.active and job.id not in self.reported:
                self.reported.add(job.id)
                self.bar.write(job.describe(), file=self.stream)
        counts = {s: sum(j.state == s for j in self.all) for s in ("running", "queued")}
        self.bar.set_postfix(running=counts["running"], queued=counts["queued"], refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def cmd_train_jobs(args, pre: dict, params) -> int:
    """``train`` through the job layer (see the module docstring)."""
    from .cache import ModelCache
    from .cli_common import CANCELLED_MESSAGE, EXIT_CANCELLED, EXIT_ERROR, _collected_warnings
    from .cluster import plan_local_workers
    from .errors import InputError
    from .jobs import JobManager
    from .readers import read_counts_file
    from .planning import plan_training
    from .sections import prepare_sections

    out = Path(args.out)
    sc_path = Path(args.sc).resolve()
    sections, files, origin = _read_sections(args, pre)
    multi = len(sections) > 1 or bool(args.st_dir) or bool(args.section_key)
    sc = read_counts_file(sc_path, pre.get("layer_sc"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = prepare_sections(sc, sections, labels_key=pre["labels_key"],
                                    layer_sc=pre.get("layer_sc"), layer_st=pre.get("layer_st"),
                                    spatial_key=pre.get("spatial_key", "spatial"),
                                    n_top_genes=int(pre.get("n_top_genes", 2000)),
                                    hvg=bool(pre.get("hvg", True)),
                                    condition_key=args.condition_key)
    for line in prepared.report.summary_lines():
        print(line)
    for msg in _collected_warnings(caught, prepared.report.warnings):
        print(f"Warning: {msg}")
    tmp_cache = tempfile.mkdtemp(prefix="destvi-nocache-") if args.no_cache else None
    cache = ModelCache(tmp_cache or args.cache_dir)
    plan = plan_local_workers(n_workers=args.workers) if not args.scheduler else None
    manager = JobManager(args.scheduler, cache=cache, plan=plan)
    seeds = max(1, int(args.seeds or 1))
    print(f"Training {len(sections)} section{'s' * (len(sections) > 1)} x {seeds} seed"
          f"{'s' * (seeds > 1)} from one reference on the {manager.describe_cluster()}: "
          f"preset {args.preset}, seed {params.seed}", flush=True)
    for name, section in prepared.sections.items():
        plan = plan_training(prepared.sc.n_obs, section.n_obs, section.n_vars,
                             len(prepared.report.cell_type_counts), params, params.device,
                             sc_counts=prepared.sc.X, st_counts=section.X)
        print(f"  {name}: {plan.describe()}", flush=True)
    progress = None
    try:
        jobs = manager.submit_sections(prepared.sc, prepared.sections, pre["labels_key"], params,
                                       n_seeds=seeds)
        progress = _JobsProgress(jobs)
        while any(j.active for j in progress.all):
            progress.update()
            time.sleep(0.5)
        progress.update()
    except KeyboardInterrupt:
        for job in manager.jobs():
            job.cancel()
        print(CANCELLED_MESSAGE, file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        if progress is not None:
            progress.close()
        manager.close()
    try:
        failed = [j for j in jobs if j.state != "done"]
        written = _write_outputs(out, jobs, prepared, files, origin, multi, pre, params, sc_path)
        for name, folder in written.items():
            print(f"Saved section {name}: {folder}")
        if failed:
            lines = "; ".join(f"{j.label}: {j.message or j.state}" for j in failed)
            raise InputError(f"{len(failed)} of {len(jobs)} trainings did not finish ({lines})",
                             "fix what the message says and run the same command again: "
                             "finished models come from the cache")
    finally:
        if tmp_cache:
            shutil.rmtree(tmp_cache, ignore_errors=True)
    return 0 if not failed else EXIT_ERROR


def _write_outputs(out: Path, jobs, prepared, files, origin, multi, pre, params, sc_path):
    from .errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file", "give a folder for the models")
    written = {}
    for job in jobs:
        if job.state != "done":
            continue
        name = job.section
        folder = _model_folder(out, name, multi)
        section_pre = dict(pre, genes="model", **({"section": origin[name]} if name in origin else {}))
        extra = {"preprocessing": section_pre, "params": job.params,
                 "inputs": {"sc": str(sc_path), "st": files.get(name)}, "section": name,
                 "condition": prepared.conditions.get(name), "from_cache": job.from_cache,
                 "cache_key": job.cache_key}
        if job.params.get("st_seed") is not None:
            folder = folder / ENSEMBLE_DIR / f"seed-{job.seed}"
        _write_model(Path(job.path), folder, extra)
        written.setdefault(name, _model_folder(out, name, multi))
    if multi:
        out.mkdir(parents=True, exist_ok=True)
        manifest = {"format": 1, "sc": str(sc_path), "labels_key": pre["labels_key"],
                    "preprocessing": pre, "params": params.to_dict(),
                    "sections": {name: {"model": name, "st": files.get(name),
                                        "condition": prepared.conditions.get(name),
                                        "trained": name in written}
                                 for name in prepared.sections}}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return written


# ============================================================================================
# export
# ============================================================================================

def is_sections_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def ensemble_sd(model_dir: str | Path, spot_names, types: list[str]):
    """Per spot and type, the standard deviation of the proportions across the seeds of an
    ensemble (the model itself and ``ensemble/seed-*``); None without an ensemble."""
    import numpy as np
    import pandas as pd

    from .model_files import read_proportions

    model_dir = Path(model_dir)
    members = [model_dir] + sorted((model_dir / ENSEMBLE_DIR).glob("seed-*"))
    if len(members) < 2:
        return None
    props = [read_proportions(m, spot_names) for m in members]
    props = [p[types] for p in props if p is not None]
    if len(props) < 2:
        return None
    stack = np.stack([p.to_numpy(np.float64) for p in props])
    return pd.DataFrame(stack.std(0, ddof=1), index=props[0].index, columns=types)


def add_ensemble_sd(result_path: Path, model_dir: str | Path) -> bool:
    """Add ``obsm['proportions_sd']`` (and the seeds in ``uns``) to an exported h5ad when the
    model folder holds a seed ensemble. Returns whether it did."""
    import anndata as ad
    import numpy as np

    from .model_files import read_metadata

    members = sorted((Path(model_dir) / ENSEMBLE_DIR).glob("seed-*"))
    if not members:
        return False
    result = ad.read_h5ad(result_path)
    types = [str(t) for t in read_metadata(model_dir)["cell_types"]]
    sd = ensemble_sd(model_dir, result.obs_names, types)
    if sd is None:
        return False
    sd.columns = [str(c).replace("/", "_") for c in sd.columns]
    result.obsm["proportions_sd"] = sd.astype(np.float64)
    result.uns["destvi_ensemble"] = {"n_seeds": len(members) + 1,
                                     "members": [m.name for m in members]}
    tmp = result_path.with_name(result_path.name + ".tmp")
    result.write_h5ad(tmp)
    tmp.replace(result_path)
    return True


def cmd_export_sections(args, export_one) -> int:
    """``export --model MODEL_DIR`` of a multi-section folder: one h5ad of every section with
    ``obs['section']`` (and ``obs['condition']``). ``--st`` files override the recorded ones
    by section name (file stem)."""
    import anndata as ad

    from .errors import InputError
    from .sections import concatenate_sections, section_name

    root = Path(args.model)
    manifest = json.loads((root / MANIFEST).read_text())
    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder", "give a file name such as all_sections.h5ad")
    given = {section_name(p): str(p) for p in (args.st or [])}
    results = {}
    with tempfile.TemporaryDirectory(prefix="destvi-export-") as tmp:
        for name, info in manifest["sections"].items():
            folder = root / info["model"]
            if not info.get("trained", True) or not folder.is_dir():
                print(f"Warning: section {name} has no trained model; it is left out")
                continue
            st_path = given.get(name) or info.get("st")
            if not st_path:
                raise InputError(f"no spatial file is known for section {name!r}",
                                 f"pass it with --st {name}.h5ad")
            part = Path(tmp) / f"{name}.h5ad"
            one = argparse.Namespace(**{**vars(args), "model": str(folder), "st": [st_path],
                                        "out": str(part)})
            code = export_one(one)  # adds the ensemble's spread when there is one
            if code:
                return code
            adata = ad.read_h5ad(part)
            if info.get("condition"):
                adata.obs["condition"] = str(info["condition"])
            results[name] = adata
        if not results:
            raise InputError(f"{root} holds no trained section", "train the sections first")
        merged = concatenate_sections(results)
        merged.uns["destvi"] = dict(results[next(iter(results))].uns.get("destvi", {}))
        merged.uns["destvi_sections"] = {
            "names": list(results), "models": [str((root / manifest["sections"][n]["model"])
                                                   .resolve()) for n in results],
            "conditions": json.dumps({n: manifest["sections"][n].get("condition")
                                      for n in results})}
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(out.name + ".tmp")
        merged.write_h5ad(tmp_out)
        tmp_out.replace(out)
    print(f"Wrote {out}: {merged.n_obs} spots from {len(results)} sections "
          f"(obs['section']), obsm['proportions']")
    return 0


# ============================================================================================
# jobs
# ============================================================================================

def cmd_jobs(args) -> int:
    """``jobs``: list the training jobs of a shared Dask scheduler (any process's), or cancel
    one."""
    from .cluster import scheduler_address
    from .errors import InputError
    from .jobs import JobManager

    address = scheduler_address(args.scheduler)
    if not address:
        raise InputError("no scheduler to ask: jobs of a local cluster live inside the app or "
                         "the train command that started them",
                         "pass --scheduler tcp://host:8786 (or set $DESTVI_STUDIO_SCHEDULER)")
    manager = JobManager(address)
    try:
        jobs = manager.jobs_on_scheduler()
        if args.cancel:
            match = [j for j in jobs if j.id == args.cancel]
            if not match:
                raise InputError(f"no job {args.cancel!r} on {address}",
                                 "copy an id from 'python -m destvi_core jobs'")
            job = match[0]
            print(f"Cancelling {job.label}" if job.cancel() else f"{job.label} already ended")
            return 0
        if not jobs:
            print(f"No training job on {address}")
            return 0
        print(f"{len(jobs)} jobs on {address}:")
        for job in jobs:
            print(f"  {job.id}  {job.state:9s}  {job.describe()}")
        return 0
    finally:
        manager.close()
