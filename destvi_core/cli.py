"""Command-line interface: ``python -m destvi_core {demo,train,export,jobs,cache}``.

Every user-facing failure (:class:`~destvi_core.errors.DestVIError`, missing files) is printed as
one line ``error: <message>`` on stderr with exit code 2 (argparse errors also exit 2); Ctrl-C
during training prints "Training cancelled; nothing was written" and exits 130.

Examples
--------
::

    python -m destvi_core demo --out demo/
    python -m destvi_core train --sc demo/sc.h5ad --st demo/st.h5ad --label-key cell_type \\
        --out model/ --preset quick
    python -m destvi_core export --model model/ --st demo/st.h5ad --out results.h5ad
    python -m destvi_core cache list
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .cli_common import (CANCELLED_MESSAGE, EXIT_CANCELLED, EXIT_ERROR,  # noqa: F401
                         _collected_warnings)

PHASES = {"condscvi": "Reference model (CondSCVI)", "destvi": "Spatial model (DestVI)"}


# ============================================================================================
# parser
# ============================================================================================

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m destvi_core",
        description="DestVI Studio: deconvolution of spatial transcriptomics with DestVI.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="write the simulated demo data (sc.h5ad, st.h5ad, "
                                       "genesets.gmt)")
    demo.add_argument("--out", required=True, metavar="DIR", help="output folder")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    train = sub.add_parser("train", help="train CondSCVI + DestVI and save the model pair")
    train.add_argument("--sc", required=True, metavar="SC.h5ad",
                       help="single-cell reference (raw counts)")
    train.add_argument("--st", action="append", metavar="ST.h5ad",
                       help="spatial data (.h5ad or Space Ranger folder, raw counts); repeat it "
                            "for several sections (one model each at MODEL_DIR/<file stem>/)")
    train.add_argument("--st-dir", default=None, metavar="DIR",
                       help="a folder with one spatial .h5ad (or Space Ranger folder) per section")
    train.add_argument("--section-key", default=None, metavar="COL",
                       help="split ONE spatial file into sections by this obs column")
    train.add_argument("--condition-key", default="condition", metavar="COL",
                       help="obs column with each section's condition (default condition)")
    train.add_argument("--seeds", type=int, default=1, metavar="N",
                       help="seed ensemble: N spatial models per section (seeds seed..seed+N-1, "
                            "one reference); the spread across seeds goes into export")
    train.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run the trainings on this Dask scheduler (tcp://host:8786; default "
                            "$DESTVI_STUDIO_SCHEDULER, else a local cluster when jobs are used)")
    train.add_argument("--workers", type=int, default=None, metavar="N",
                       help="workers of the local cluster (default: from the cores and GPUs)")
    train.add_argument("--label-key", required=True, help="obs column of the reference with "
                                                          "the cell types")
    train.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    train.add_argument("--sc-epochs", type=int, default=None,
                       help="reference model epochs, trained exactly (default: from the preset; "
                            "the default preset picks them from optimisation steps)")
    train.add_argument("--st-epochs", type=int, default=None,
                       help="spatial model epochs, trained exactly (default: from the preset)")
    train.add_argument("--st-min-steps", type=int, default=None,
                       help="at least this many spatial optimisation steps: small data sets get "
                            "more epochs (default preset: 5000; 0 = off)")
    train.add_argument("--st-max-steps", type=int, default=None,
                       help="at most this many spatial optimisation steps: large data sets get "
                            "fewer epochs (default preset: 20000; 0 = off)")
    train.add_argument("--sc-max-steps", type=int, default=None,
                       help="at most this many reference optimisation steps (default preset: "
                            "40000; 0 = off)")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                       help="training device (default auto)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--preset", default="default",
                       choices=["default", "tutorial", "quick", "reference"],
                       help="parameter set (default: epochs chosen from optimisation steps; "
                            "tutorial: exactly 300 + 2500 epochs; quick: 100 + 300 epochs)")
    train.add_argument("--layer-sc", default=None, metavar="L",
                       help="reference layer with raw counts (default layers['counts'] or X)")
    train.add_argument("--layer-st", default=None, metavar="L",
                       help="spatial layer with raw counts (default layers['counts'] or X)")
    train.add_argument("--spatial-key", default="spatial",
                       help="obsm key of the spot coordinates (default spatial)")
    train.add_argument("--bin-size", type=int, default=None, metavar="UM",
                       help="Visium HD bin size in um when --st is a Space Ranger HD output "
                            "(default 16; 8 gives ~4x more bins)")
    train.add_argument("--n-top-genes", type=int, default=2000,
                       help="number of highly variable genes (default 2000)")
    train.add_argument("--no-hvg", action="store_true",
                       help="use all shared genes (no HVG selection)")
    train.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="model cache folder (default $DESTVI_STUDIO_CACHE or "
                            "~/.cache/destvi-studio)")
    train.add_argument("--no-cache", action="store_true",
                       help="neither read nor write the model cache")

    export = sub.add_parser("export", help="write proportions and gamma of a trained model "
                                           "into an .h5ad")
    export.add_argument("--model", required=True, metavar="MODEL_DIR",
                        help="model folder written by 'train'")
    export.add_argument("--st", action="append", metavar="ST.h5ad",
                        help="the spatial data the model was trained on (for a multi-section "
                             "MODEL_DIR: optional, overrides the recorded file of that section)")
    export.add_argument("--out", required=True, metavar="RESULT.h5ad", help="output .h5ad")
    export.add_argument("--sc", default=None, metavar="SC.h5ad",
                        help="the reference (default: the path recorded at training)")
    export.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="device (default auto)")
    export.add_argument("--with-counts", action="store_true",
                        help="also copy the count matrix into the result (default: obs, var, "
                             "obsm and uns only; the file stays proportional to spots x types)")

    jobs = sub.add_parser("jobs", help="list (or cancel) the training jobs of a shared Dask "
                                       "scheduler")
    jobs.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="scheduler address (default $DESTVI_STUDIO_SCHEDULER)")
    jobs.add_argument("--cancel", default=None, metavar="JOB_ID", help="cancel this job")

    cache = sub.add_parser("cache", help="list or clear the model cache")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    cache_sub.required = True
    lst = cache_sub.add_parser("list", help="list cached models")
    lst.add_argument("--cache-dir", default=None, metavar="DIR", help="cache folder")
    clear = cache_sub.add_parser("clear", help="remove one or all cached models")
    clear.add_argument("--key", default=None, help="remove only this entry")
    clear.add_argument("--cache-dir", default=None, metavar="DIR", help="cache folder")
    return parser


# ============================================================================================
# helpers
# ============================================================================================

def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _read_inputs(sc_path: str | Path, st_path: str | Path, pre: dict | None = None):
    from .readers import read_counts_file, read_spatial

    pre = pre or {}
    return (read_counts_file(sc_path, pre.get("layer_sc")),
            read_spatial(st_path, pre.get("bin_size"), pre.get("layer_st")))


def _prepare(sc, st, pre: dict):
    from .data import prepare_inputs

    section = pre.get("section")  # a section split from one file by an obs column
    if isinstance(section, dict) and section.get("key") in st.obs:
        st = st[st.obs[section["key"]].astype(str).to_numpy() == section["value"]].copy()
    if isinstance(pre.get("genes"), list):  # trained with other sections: the model's genes
        sc, pre = sc[:, [g for g in pre["genes"] if g in sc.var_names]], dict(pre, hvg=False)
    return prepare_inputs(sc, st, labels_key=pre["labels_key"], layer_sc=pre.get("layer_sc"),
                          layer_st=pre.get("layer_st"),
                          spatial_key=pre.get("spatial_key", "spatial"),
                          n_top_genes=int(pre.get("n_top_genes", 2000)),
                          hvg=bool(pre.get("hvg", True)))


class _Progress:
    """tqdm progress bars in optimisation steps, one per phase (reference, spatial model, and
    inference passes); tqdm's time left comes from the measured step rate."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.key = None

    def __call__(self, progress) -> None:
        from tqdm import tqdm

        inference = getattr(progress, "phase", "train") == "inference"
        total = getattr(progress, "n_steps", 0) or progress.n_epochs
        key = (progress.model, inference, total)
        if key != self.key or self.bar is None:
            self.close()
            self.key = key
            desc = (f"Inference ({progress.model})" if inference
                    else PHASES.get(progress.model, progress.model))
            self.bar = tqdm(total=total, desc=desc, unit="chunk" if inference else "step",
                            file=self.stream, dynamic_ncols=True, mininterval=0.5)
        done = progress.step if getattr(progress, "n_steps", 0) else progress.epoch
        self.bar.update(done - self.bar.n)
        if not inference:
            loss = progress.loss.get("loss")
            postfix = {"epoch": f"{progress.epoch}/{progress.n_epochs}"}
            if loss is not None:
                postfix["loss"] = f"{loss:.4g}"
            self.bar.set_postfix(postfix, refresh=False)
        if done >= total and getattr(progress, "end_of_epoch", True):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ============================================================================================
# commands
# ============================================================================================

def cmd_demo(args) -> int:
    from .simulate import write_demo

    paths = write_demo(args.out, seed=args.seed)
    labels = {"sc": "reference", "st": "spatial data", "gene_sets": "gene sets"}
    print(f"Wrote the demo data (seed {args.seed}):")
    for key, path in paths.items():
        print(f"  {labels.get(key, key)}: {path}")
    return 0


def _training_params(args):
    from .pipeline import preset

    overrides = {"seed": args.seed, "device": args.device}
    for name in ("sc_epochs", "st_epochs", "st_min_steps", "st_max_steps", "sc_max_steps"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    return preset(args.preset, **overrides)


def cmd_train(args) -> int:
    from . import persistence
    from .cache import ModelCache
    from .cli_jobs import cmd_train_jobs, uses_jobs
    from .errors import InputError
    from .pipeline import fit_models
    from .planning import plan_training

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file", "give a folder for the model")
    params = _training_params(args)  # validate before reading data
    pre = {"labels_key": args.label_key, "layer_sc": args.layer_sc, "layer_st": args.layer_st,
           "spatial_key": args.spatial_key, "n_top_genes": args.n_top_genes,
           "hvg": not args.no_hvg}
    if args.bin_size is not None:
        pre["bin_size"] = args.bin_size
    if uses_jobs(args):  # several sections, a seed ensemble or a Dask cluster
        return cmd_train_jobs(args, pre, params)
    if not args.st:
        raise InputError("no spatial data was given", "pass --st ST.h5ad")
    sc_path, st_path = Path(args.sc).resolve(), Path(args.st[0]).resolve()
    progress = _Progress()
    try:
        sc, st = _read_inputs(sc_path, st_path, pre)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            prepared = _prepare(sc, st, pre)
        del sc, st  # the prepared copies are what trains (no second copy of a large slide)
        for line in prepared.report.summary_lines():
            print(line)
        for msg in _collected_warnings(caught, prepared.report.warnings):
            print(f"Warning: {msg}")
        plan = plan_training(prepared.sc.n_obs, prepared.st.n_obs, prepared.st.n_vars,
                             len(prepared.report.cell_type_counts), params, params.device,
                             sc_counts=prepared.sc.X, st_counts=prepared.st.X)
        print(f"Schedule (preset {args.preset}, seed {params.seed}): {plan.describe()}")
        for line in plan.details():
            print(f"  {line}")
        sys.stdout.flush()
        cache = None if args.no_cache else ModelCache(args.cache_dir)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fit_models(prepared.sc, prepared.st, labels_key=args.label_key,
                                params=params, callback=progress, cache=cache,
                                use_cache=not args.no_cache)
        progress.close()
        for msg in _collected_warnings(caught):
            print(f"Warning: {msg}")
    except KeyboardInterrupt:
        progress.close()
        print(CANCELLED_MESSAGE, file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        progress.close()
    if result.from_cache:
        print(f"Loaded the trained models from the cache (key {result.cache_key[:12]})")
    extra = {"preprocessing": pre, "params": params.to_dict(),
             "inputs": {"sc": str(sc_path), "st": str(st_path)},
             "from_cache": result.from_cache, "cache_key": result.cache_key}
    persistence.save_models(out, result.sc_model, result.st_model, extra_metadata=extra)
    props = result.st_model.get_proportions()
    print(f"Saved the model pair to {out} ({len(props.columns)} cell types, "
          f"{props.shape[0]} spots, {len(result.st_model.genes)} genes)")
    return 0


def _export_inputs(args, meta: dict):
    from .errors import InputError

    extra = meta.get("extra") or {}
    recorded = (extra.get("inputs") or {}).get("sc")
    if args.sc is not None:
        sc_path = Path(args.sc)
    elif recorded and Path(recorded).exists():
        sc_path = Path(recorded)
    else:
        where = f" (the recorded reference {recorded} does not exist)" if recorded else ""
        raise InputError(f"the model needs its single-cell reference to be loaded{where}",
                         "pass the reference with --sc SC.h5ad")
    pre = extra.get("preprocessing")
    if not pre:  # saved by the app or the cache: keep all genes, subset to the model's later
        pre = {"labels_key": meta["labels_key"], "hvg": False, "subset_to_model": True}
    if pre.get("genes") == "model":
        pre = dict(pre, genes=[str(g) for g in meta.get("genes", [])])
    return sc_path, dict(pre)


def cmd_export(args) -> int:
    import anndata as ad
    import numpy as np
    import pandas as pd

    from . import persistence
    from .analysis.export import _h5_keys, json_safe, safe_name
    from .errors import InputError

    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder", "give a file name such as results.h5ad")
    meta = persistence.read_metadata(args.model)
    sc_path, pre = _export_inputs(args, meta)
    sc, st = _read_inputs(sc_path, args.st, pre)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = _prepare(sc, st, pre)
    del sc, st
    for msg in _collected_warnings(caught):
        print(f"Warning: {msg}")
    sc_p, st_p = prepared.sc, prepared.st
    genes = [str(g) for g in meta.get("genes", [])]
    if pre.get("subset_to_model") and set(genes) <= set(map(str, sc_p.var_names)):
        sc_p, st_p = sc_p[:, genes].copy(), st_p[:, genes].copy()
    _, st_model = persistence.load_models(args.model, sc_p, st_p, device=args.device)

    result = (st_p.copy() if args.with_counts else
              ad.AnnData(obs=st_p.obs.copy(), var=st_p.var.copy(), uns=dict(st_p.uns),
                         obsm={k: v.copy() for k, v in st_p.obsm.items()}))
    result.obs_names = result.obs_names.astype(str)
    progress = _Progress()
    props = st_model.get_proportions(callback=progress)
    cell_types = [str(c) for c in props.columns]
    props.columns = [c.replace("/", "_") for c in cell_types]
    props.index = result.obs_names
    props = props.astype(np.float64)
    result.obsm["proportions"] = props.div(props.sum(axis=1), axis=0)  # exact in float64
    gamma_keys = {}
    for ct, df in st_model.get_gamma(callback=progress).items():
        key = f"gamma_{safe_name(ct)}"
        gamma_keys[str(ct)] = key
        result.obsm[key] = pd.DataFrame(df.to_numpy(), index=result.obs_names,
                                        columns=[str(c) for c in df.columns])
    progress.close()
    info = json_safe({**meta, "cell_types": cell_types, "proportion_columns": list(props.columns),
                      "gamma_keys": gamma_keys,
                      "export": {"model": str(Path(args.model).resolve()),
                                 "sc": str(sc_path.resolve()),
                                 "st": str(Path(args.st).resolve())}})
    result.uns["destvi"] = _h5_keys(info)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        result.write_h5ad(tmp)
    except Exception:  # uns that h5py cannot store: keep it as one JSON string
        result.uns["destvi"] = {"json": json.dumps(info)}
        result.write_h5ad(tmp)
    tmp.replace(out)
    counts = "with the counts" if args.with_counts else "without the counts (--with-counts adds them)"
    print(f"Wrote {out}: {result.n_obs} spots x {result.n_vars} genes {counts}, "
          f"obsm['proportions'] ({len(cell_types)} cell types) and "
          f"{len(gamma_keys)} obsm['gamma_<type>']")
    return 0


def cmd_cache(args) -> int:
    from .cache import ModelCache

    cache = ModelCache(args.cache_dir)
    if args.cache_command == "list":
        table = cache.list()
        if table.empty:
            print(f"The cache {cache.root} is empty")
            return 0
        shown = table.drop(columns=["path"]).copy()
        shown["key"] = shown["key"].str[:12]
        print(f"Cache {cache.root} ({len(table)} entries):")
        print(shown.to_string(index=False))
        return 0
    removed = cache.clear(args.key)
    if args.key is None:
        print(f"Removed {removed} cache entries from {cache.root}")
    elif removed:
        print(f"Removed cache entry {args.key}")
    else:
        print(f"No cache entry {args.key} in {cache.root}")
    return 0


def cmd_export_any(args) -> int:
    """``export`` of one model folder, or of a multi-section folder (one h5ad, obs['section']);
    a seed ensemble adds ``obsm['proportions_sd']``."""
    from .cli_jobs import add_ensemble_sd, cmd_export_sections, is_sections_folder
    from .errors import InputError

    if is_sections_folder(args.model):
        return cmd_export_sections(args, cmd_export_any)
    if not args.st or len(args.st) > 1:
        raise InputError("export of one model needs exactly one --st (the spatial data it was "
                         f"trained on); got {len(args.st or [])}", "pass --st ST.h5ad once")
    code = cmd_export(argparse.Namespace(**{**vars(args), "st": args.st[0]}))
    if code == 0 and add_ensemble_sd(Path(args.out), args.model):
        print("Added obsm['proportions_sd']: the spread of the proportions across the seeds")
    return code


def cmd_jobs(args) -> int:
    from .cli_jobs import cmd_jobs as run

    return run(args)


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "export": cmd_export_any, "jobs": cmd_jobs,
            "cache": cmd_cache}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 user error, 130 cancelled)."""
    from .errors import DestVIError, TrainingCancelled

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return COMMANDS[args.command](args)
    except TrainingCancelled:
        print(CANCELLED_MESSAGE, file=sys.stderr)
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        print("Interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except (DestVIError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError, FloatingPointError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
