"""Train scvi-tools' CondSCVI + DestVI on h5ad files and print timings/accuracy as JSON.

Runs in a separate environment with scvi-tools 1.3.3 (it does not import destvi_core), e.g.::

    python3 -m venv /tmp/scvi-venv
    /tmp/scvi-venv/bin/pip install --prefer-binary torch==2.13.0 "scvi-tools==1.3.3"
    /tmp/scvi-venv/bin/python bench/scvi_tools_runner.py --sc sc.h5ad --st st.h5ad

``bench/bench_models.py --scvi-python /tmp/scvi-venv/bin/python`` writes the files and calls this.
The spatial file must hold the true proportions in ``obsm['true_proportions']`` (DataFrame,
columns = cell types). Output: one line ``SCVIJSON {...}`` with per-epoch times (evaluation time
excluded) and the proportions RMSE / mean per-type Spearman every ``--eval-every`` DestVI epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def prop_metrics(truth, pred) -> dict:
    """Same definition as bench_models.prop_metrics (spec 5.3 metrics_vector)."""
    import numpy as np
    from scipy.stats import spearmanr

    pred = pred.loc[truth.index, list(truth.columns)].to_numpy(float)
    gt = truth.to_numpy(float)
    rho = []
    for c in range(gt.shape[1]):
        r = spearmanr(gt[:, c], pred[:, c]).statistic
        rho.append(0.0 if not np.isfinite(r) else float(r))
    return {"rmse": float(np.sqrt(np.mean((gt - pred) ** 2))), "spearman": float(np.mean(rho))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sc", required=True)
    ap.add_argument("--st", required=True)
    ap.add_argument("--sc-epochs", type=int, default=20)
    ap.add_argument("--st-epochs", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import importlib.metadata as md
    import logging
    import warnings

    import anndata as ad
    import numpy as np
    import pandas as pd
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    import scvi
    from lightning.pytorch.callbacks import Callback

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    scvi.settings.seed = args.seed
    scvi.settings.dl_num_workers = 0

    sc = ad.read_h5ad(args.sc)
    st = ad.read_h5ad(args.st)
    truth = st.obsm["true_proportions"]
    if not isinstance(truth, pd.DataFrame):
        raise SystemExit("st.obsm['true_proportions'] must be a DataFrame")
    out: dict = {"versions": {"scvi-tools": md.version("scvi-tools"), "torch": torch.__version__,
                              "lightning": md.version("lightning")},
                 "torch_threads": torch.get_num_threads()}

    class EpochClock(Callback):
        def __init__(self, on_epoch=None):
            self.marks: list[float] = []
            self.excluded = 0.0
            self.on_epoch = on_epoch
            self.t0 = None

        def on_train_start(self, trainer, pl_module):
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            train_s = time.perf_counter() - self.t0 - self.excluded
            self.marks.append(train_s)
            if self.on_epoch is not None:
                te = time.perf_counter()
                self.on_epoch(trainer.current_epoch + 1, train_s, pl_module)
                self.excluded += time.perf_counter() - te

    common = dict(accelerator="cpu", devices=1, enable_progress_bar=False,
                  enable_model_summary=False, logger=False, enable_checkpointing=False)

    t = time.perf_counter()
    scvi.model.CondSCVI.setup_anndata(sc, labels_key="cell_type")
    sc_model = scvi.model.CondSCVI(sc, weight_obs=False)
    out["sc_setup_s"] = time.perf_counter() - t
    clock = EpochClock()
    t = time.perf_counter()
    sc_model.train(max_epochs=args.sc_epochs, callbacks=[clock], **common)
    out["sc_wall_s"] = time.perf_counter() - t
    out["sc_train_s"] = clock.marks[-1]
    ep = np.diff([0.0] + clock.marks)
    out["sc_epoch_s"] = ep.tolist()
    out["sc_epoch_s_median"] = float(np.median(ep))

    t = time.perf_counter()
    scvi.model.DestVI.setup_anndata(st)
    st_model = scvi.model.DestVI.from_rna_model(st, sc_model)
    out["st_setup_s"] = time.perf_counter() - t
    evals: list[dict] = []

    def evaluate(epoch, train_s, pl_module=None):
        module = st_model.module
        was_training = module.training
        module.eval()
        props = st_model.get_proportions()
        if was_training:
            module.train()
        m = prop_metrics(truth, props)
        evals.append({"epoch": epoch, "train_s": out["sc_train_s"] + train_s,
                      "st_train_s": train_s, **m})
        print(f"[scvi-tools] destvi epoch {epoch} train {train_s:.1f}s rmse {m['rmse']:.4f} "
              f"spearman {m['spearman']:.4f}", flush=True)

    def on_epoch(epoch, train_s, pl_module):
        if epoch % args.eval_every == 0 or epoch == args.st_epochs:
            evaluate(epoch, train_s, pl_module)

    evaluate(0, 0.0)
    clock = EpochClock(on_epoch)
    t = time.perf_counter()
    st_model.train(max_epochs=args.st_epochs, callbacks=[clock], **common)
    out["st_wall_s"] = time.perf_counter() - t
    out["st_train_s"] = clock.marks[-1]
    ep = np.diff([0.0] + clock.marks)
    out["st_epoch_s"] = ep.tolist()
    out["st_epoch_s_median"] = float(np.median(ep))
    out["train_s"] = out["sc_train_s"] + out["st_train_s"]
    out["evals"] = evals
    out["final"] = evals[-1]
    print("SCVIJSON " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
