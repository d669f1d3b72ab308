"""CLI with several sections and seed ensembles, trained as jobs on the test Dask cluster."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest

from conftest import TINY_SIM
from destvi_core.cli import main

pytest.importorskip("distributed")

TRAIN = ["--label-key", "cell_type", "--sc-epochs", "2", "--st-epochs", "2", "--device", "cpu",
         "--no-hvg"]


@pytest.fixture(scope="module")
def section_files(tmp_path_factory):
    """A reference and three sections (two control, one treated) as .h5ad files."""
    from destvi_core.simulate import simulate_destvi

    sim = simulate_destvi(**TINY_SIM)
    for key in [k for k in sim.st.obsm if k.startswith("true_")]:
        del sim.st.obsm[key]
    sim.st.uns.pop("simulation", None)
    root = tmp_path_factory.mktemp("cli_sections")
    (root / "spatial").mkdir()
    sim.sc.write_h5ad(root / "sc.h5ad")
    whole = sim.st.copy()
    whole.obs["sample"] = np.repeat(["A", "B", "C"], 50)
    whole.write_h5ad(root / "whole.h5ad")
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(sim.st.n_obs), 3)):
        part = sim.st[idx].copy()
        part.obs["condition"] = "control" if i < 2 else "treated"
        paths.append(root / "spatial" / f"S{i}.h5ad")
        part.write_h5ad(paths[-1])
    return {"root": root, "sc": root / "sc.h5ad", "st": paths, "whole": root / "whole.h5ad"}


@pytest.fixture(scope="module")
def trained_sections(section_files, scheduler_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_sections_out") / "models"
    cache = tmp_path_factory.mktemp("cli_sections_cache")
    argv = ["train", "--sc", str(section_files["sc"]), "--out", str(out), "--cache-dir",
            str(cache), "--scheduler", scheduler_address, "--seeds", "2", *TRAIN]
    for path in section_files["st"]:
        argv += ["--st", str(path)]
    assert main(argv) == 0
    return {"out": out, "cache": cache}


def test_three_sections_from_one_reference(trained_sections, section_files, capsys):
    out = trained_sections["out"]
    manifest = json.loads((out / "sections.json").read_text())
    assert list(manifest["sections"]) == ["S0", "S1", "S2"]
    assert [s["condition"] for s in manifest["sections"].values()] == ["control", "control",
                                                                         "treated"]
    weights = set()
    for name in ("S0", "S1", "S2"):
        folder = out / name
        for item in ("metadata.json", "condscvi.pt", "destvi.pt", "proportions.npy"):
            assert (folder / item).is_file(), (name, item)
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["extra"]["section"] == name and meta["data"]["n_spots"] == 50
        assert (folder / "ensemble" / "seed-1" / "destvi.pt").is_file()
        weights.add((folder / "condscvi.pt").read_bytes())
    assert len(weights) == 1  # one reference model for every section
    reference_dirs = list((trained_sections["cache"] / "references").iterdir())
    assert len(reference_dirs) == 1


def test_export_one_section_and_all_sections(trained_sections, section_files, tmp_path, capsys):
    from destvi_core.model_files import read_proportions

    out = trained_sections["out"]
    one = tmp_path / "s1.h5ad"
    assert main(["export", "--model", str(out / "S1"), "--st", str(section_files["st"][1]),
                 "--out", str(one)]) == 0
    res = ad.read_h5ad(one)
    saved = read_proportions(out / "S1", res.obs_names)
    np.testing.assert_allclose(res.obsm["proportions"].to_numpy(), saved.to_numpy(), atol=1e-6)
    sd = res.obsm["proportions_sd"].to_numpy()
    assert sd.shape == (50, 4) and (sd > 0).any()

    merged = tmp_path / "all.h5ad"
    assert main(["export", "--model", str(out), "--out", str(merged)]) == 0
    assert "from 3 sections" in capsys.readouterr().out
    res = ad.read_h5ad(merged)
    assert res.n_obs == 150
    assert res.obs["section"].value_counts().to_dict() == {"S0": 50, "S1": 50, "S2": 50}
    assert res.obs.loc[res.obs["section"] == "S2", "condition"].unique().tolist() == ["treated"]
    np.testing.assert_allclose(res.obsm["proportions"].sum(1), 1.0, atol=1e-9)
    assert "proportions_sd" in res.obsm
    assert list(res.uns["destvi_sections"]["names"]) == ["S0", "S1", "S2"]


def test_sections_from_an_obs_column(section_files, scheduler_address, tmp_path):
    out = tmp_path / "models"
    argv = ["train", "--sc", str(section_files["sc"]), "--st", str(section_files["whole"]),
            "--section-key", "sample", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
            "--scheduler", scheduler_address, *TRAIN]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["A", "B", "C"]
    # the section's spots are found again in the whole file when exporting one section
    res_path = tmp_path / "b.h5ad"
    assert main(["export", "--model", str(out / "B"), "--st", str(section_files["whole"]),
                 "--out", str(res_path)]) == 0
    res = ad.read_h5ad(res_path)
    assert res.n_obs == 50 and set(res.obs["sample"]) == {"B"}


def test_bad_section_is_named_before_anything_trains(section_files, scheduler_address,
                                                     tmp_path, capsys):
    bad = ad.read_h5ad(section_files["st"][2])
    del bad.obsm["spatial"]
    bad.write_h5ad(tmp_path / "broken.h5ad")
    argv = ["train", "--sc", str(section_files["sc"]), "--st", str(section_files["st"][0]),
            "--st", str(tmp_path / "broken.h5ad"), "--out", str(tmp_path / "m"),
            "--scheduler", scheduler_address, "--no-cache", *TRAIN]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: section 'broken': the spatial data has no coordinates")
    assert not (tmp_path / "m").exists()
    assert main(["train", "--sc", str(section_files["sc"]), "--st", str(section_files["st"][0]),
                 "--st", str(section_files["st"][0]), "--out", str(tmp_path / "m"),
                 "--scheduler", scheduler_address, *TRAIN]) == 2
    assert "same section name 'S0'" in capsys.readouterr().err


def test_jobs_command_lists_the_jobs_of_the_scheduler(trained_sections, scheduler_address,
                                                      capsys, monkeypatch):
    assert main(["jobs", "--scheduler", scheduler_address]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "section S1" in line]
    assert lines and all(" done " in line for line in lines)  # main seed and seed 1
    assert any("reference: done" in line for line in out.splitlines())
    assert main(["jobs", "--scheduler", scheduler_address, "--cancel", "spa-0-nothing"]) == 2
    assert "no job 'spa-0-nothing'" in capsys.readouterr().err
    monkeypatch.delenv("DESTVI_STUDIO_SCHEDULER", raising=False)
    assert main(["jobs"]) == 2
    assert "--scheduler" in capsys.readouterr().err
