"""Tests of the model cache (destvi_core.cache)."""

from __future__ import annotations

import json
import threading

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from destvi_core import cache as cache_mod
from destvi_core.cache import ModelCache, cache_key, default_root
from destvi_core.errors import CorruptedModelError, DestVIWarning, ModelMismatchError


def make_pair(seed: int = 0) -> tuple[ad.AnnData, ad.AnnData]:
    rng = np.random.default_rng(seed)
    sc = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, (30, 20)).astype(np.float32)),
                    obs=pd.DataFrame({"cell_type": pd.Categorical(["A", "B", "C"] * 10)},
                                     index=[f"c{i}" for i in range(30)]),
                    var=pd.DataFrame(index=[f"g{i}" for i in range(20)]))
    st = ad.AnnData(sp.csr_matrix(rng.poisson(3.0, (10, 20)).astype(np.float32)),
                    obs=pd.DataFrame(index=[f"s{i}" for i in range(10)]),
                    var=pd.DataFrame(index=[f"g{i}" for i in range(20)]))
    return sc, st


class FakeModel:
    def __init__(self, name: str, epochs: int = 3):
        self.name = name
        self.history = [{"epoch": i} for i in range(epochs)]


class FakePersistence:
    """Stand-in for destvi_core.persistence: a JSON file per entry."""

    def __init__(self):
        self.saved = 0

    def save_models(self, directory, sc_model, st_model, extra_metadata=None):
        self.saved += 1
        meta = {"created": f"2026-01-01T00:00:{self.saved:02d}", "cell_types": ["A", "B", "C"],
                "data": {"n_cells": 30, "n_spots": 10, "n_genes": 20},
                "condscvi": {"history": sc_model.history},
                "destvi": {"history": st_model.history, "train": {"max_epochs": 9}},
                "models": [sc_model.name, st_model.name], "extra": extra_metadata}
        (directory / "metadata.json").write_text(json.dumps(meta))
        return directory

    def read_metadata(self, directory):
        try:
            return json.loads((directory / "metadata.json").read_text())
        except (OSError, ValueError) as err:
            raise CorruptedModelError(f"unreadable metadata in {directory}") from err

    def load_models(self, directory, sc_adata, st_adata, device="auto"):
        meta = self.read_metadata(directory)
        if meta["data"]["n_cells"] != sc_adata.n_obs:
            raise ModelMismatchError("the model was trained on other cells")
        return tuple(FakeModel(n) for n in meta["models"])


@pytest.fixture
def fake(monkeypatch) -> FakePersistence:
    from destvi_core import persistence

    fake = FakePersistence()
    for name in ("save_models", "load_models"):
        monkeypatch.setattr(persistence, name, getattr(fake, name))
    monkeypatch.setattr(cache_mod, "read_metadata", fake.read_metadata)
    return fake


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------

def test_cache_key_is_deterministic_and_sensitive():
    sc, st = make_pair()
    params = {"seed": 0, "sc_epochs": 10, "lr": 1e-3}
    key = cache_key(sc, st, "cell_type", params)
    assert len(key) == 64
    assert key == cache_key(*make_pair(), "cell_type", dict(reversed(list(params.items()))))
    sc_dense = sc.copy()
    sc_dense.X = sc.X.toarray()
    assert key == cache_key(sc_dense, st, "cell_type", params)  # storage does not matter
    assert key != cache_key(sc, st, "cell_type", {**params, "seed": 1})
    changed = sc.copy()
    changed.X[0, 0] += 1
    assert key != cache_key(changed, st, "cell_type", params)
    relabelled = sc.copy()
    relabelled.obs["cell_type"] = pd.Categorical(["B", "A", "C"] * 10)
    assert key != cache_key(relabelled, st, "cell_type", params)
    renamed = st.copy()
    renamed.obs_names = [f"spot{i}" for i in range(10)]
    assert key != cache_key(sc, renamed, "cell_type", params)
    regened = sc.copy()
    regened.var_names = [f"G{i}" for i in range(20)]
    assert key != cache_key(regened, st, "cell_type", params)
    assert key != cache_key(sc, st, "cell_type", {**params, "lr": 1e-3 + 1e-12})


def test_cache_key_handles_numpy_params():
    sc, st = make_pair()
    assert cache_key(sc, st, "cell_type", {"n": np.int64(3), "w": np.array([1.0])}) == \
        cache_key(sc, st, "cell_type", {"n": 3, "w": [1.0]})


def test_default_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DESTVI_STUDIO_CACHE", str(tmp_path / "c"))
    assert default_root() == tmp_path / "c"
    assert ModelCache().root == tmp_path / "c"
    monkeypatch.delenv("DESTVI_STUDIO_CACHE")
    assert default_root().parts[-2:] == (".cache", "destvi-studio")


# --------------------------------------------------------------------------------------------
# get / put / list / clear with a fake persistence
# --------------------------------------------------------------------------------------------

def test_put_then_get(fake, tmp_path):
    cache = ModelCache(tmp_path / "cache")
    sc, st = make_pair()
    key = cache_key(sc, st, "cell_type", {})
    assert cache.get(key, sc, st) is None
    path = cache.put(key, FakeModel("sc"), FakeModel("st"), {"params": {"seed": 0}})
    assert path == cache.path(key) and path.is_dir() and key in cache
    assert [p.name for p in cache.root.iterdir()] == [key]  # no temp leftovers
    sc_model, st_model = cache.get(key, sc, st, device="cpu")
    assert (sc_model.name, st_model.name) == ("sc", "st")
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["extra"] == {"params": {"seed": 0}, "cache_key": key}


def test_put_keeps_existing_entry(fake, tmp_path):
    cache = ModelCache(tmp_path)
    cache.put("k1", FakeModel("first"), FakeModel("st"))
    cache.put("k1", FakeModel("second"), FakeModel("st"))
    sc, st = make_pair()
    assert cache.get("k1", sc, st)[0].name == "first"
    assert cache.keys() == ["k1"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_put_failure_leaves_no_entry(fake, tmp_path, monkeypatch):
    def boom(directory, *args, **kwargs):
        (directory / "condscvi.pt").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("destvi_core.persistence.save_models", boom)
    cache = ModelCache(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        cache.put("k1", FakeModel("sc"), FakeModel("st"))
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_same_key(fake, tmp_path):
    cache = ModelCache(tmp_path)
    errors = []

    def write(i):
        try:
            cache.put("shared", FakeModel(f"sc{i}"), FakeModel("st"))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared"]
    assert json.loads((tmp_path / "shared" / "metadata.json").read_text())["models"][0]. \
        startswith("sc")


def test_put_files_is_atomic_and_references_are_not_entries(fake, tmp_path, monkeypatch):
    """Models trained on workers arrive as bytes: written atomically, reference models kept
    apart from the pair entries (not listed, removed by clear)."""
    from destvi_core import cache as cache_module

    cache = ModelCache(tmp_path)
    files = {"metadata.json": json.dumps({"created": "x"}).encode(), "condscvi.pt": b"w"}
    cache.put_files("pair", files)
    cache.put_files("ref", {"condscvi.pt": b"r", "metadata.json": b"{}"}, reference=True)
    assert cache.keys() == ["pair"] and cache.has_reference("ref") and "ref" not in cache
    assert (cache.reference_path("ref") / "condscvi.pt").read_bytes() == b"r"
    assert cache.put_files("pair", {"other.bin": b"late"}) == cache.path("pair")
    assert not (cache.path("pair") / "other.bin").exists()  # the first writer's entry stays
    assert len(cache.list()) == 1

    def broken(directory, payload):
        (directory / "condscvi.pt").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module, "write_files", broken)
    with pytest.raises(OSError, match="disk full"):
        cache.put_files("half", files)
    assert "half" not in cache
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    monkeypatch.undo()
    with pytest.raises(CorruptedModelError, match="invalid file name"):
        cache.put_files("evil", {"../escape": b"x"})
    assert "evil" not in cache and not (tmp_path.parent / "escape").exists()
    assert cache.clear() == 1
    assert not cache.has_reference("ref") and cache.keys() == []


def test_reference_key_ignores_the_spatial_data_and_spatial_parameters():
    from destvi_core.cache import reference_key
    from destvi_core.pipeline import TrainingParams, reference_cache_dict

    sc, st = make_pair()
    base = TrainingParams()
    key = reference_key(sc, "cell_type", reference_cache_dict(base))
    for spatial in ({"st_epochs": 7}, {"st_seed": 3}, {"vamp_prior_p": 5}, {"beta_reg": 1.0}):
        assert reference_key(sc, "cell_type",
                             reference_cache_dict(TrainingParams(**spatial))) == key
    for ref in ({"sc_epochs": 7}, {"seed": 3}, {"n_latent": 4}, {"init": "reference"}):
        assert reference_key(sc, "cell_type", reference_cache_dict(TrainingParams(**ref))) != key
    changed = sc.copy()
    changed.X[0, 0] += 1
    assert reference_key(changed, "cell_type", reference_cache_dict(base)) != key
    # st_seed unset keeps the pair keys of models trained before it existed
    assert "st_seed" not in base.cache_dict()
    assert TrainingParams(st_seed=2).cache_dict()["st_seed"] == 2


def test_corrupted_entry_is_removed_with_warning(fake, tmp_path):
    cache = ModelCache(tmp_path)
    cache.put("bad", FakeModel("sc"), FakeModel("st"))
    (tmp_path / "bad" / "metadata.json").write_text("{not json")
    sc, st = make_pair()
    with pytest.warns(DestVIWarning, match=r"cache entry bad was corrupted \(unreadable "
                                           r"metadata.*it was removed and the model will be "
                                           r"retrained"):
        assert cache.get("bad", sc, st) is None
    assert not (tmp_path / "bad").exists()


def test_mismatched_entry_is_removed_with_warning(fake, tmp_path):
    cache = ModelCache(tmp_path)
    cache.put("k", FakeModel("sc"), FakeModel("st"))
    sc, st = make_pair()
    with pytest.warns(DestVIWarning, match="trained on other cells"):
        assert cache.get("k", sc[:5], st) is None
    assert "k" not in cache


def test_list_and_clear(fake, tmp_path):
    cache = ModelCache(tmp_path / "cache")
    assert cache.list().empty and cache.clear() == 0
    cache.put("a" * 64, FakeModel("sc", epochs=4), FakeModel("st", epochs=0))
    cache.put("b" * 64, FakeModel("sc"), FakeModel("st"))
    (cache.root / "c").mkdir()  # entry without metadata
    table = cache.list()
    assert list(table["key"][:2]) == ["b" * 64, "a" * 64]  # newest first
    row = table.set_index("key").loc["a" * 64]
    assert (row.n_cells, row.n_spots, row.cell_types) == (30, 10, "A, B, C")
    assert (row.sc_epochs, row.st_epochs) == (4, 9)  # history length, else requested epochs
    assert row.size_mb >= 0 and row.status == "ok"
    assert table.set_index("key").loc["c", "status"] == "corrupted"
    assert cache.clear("a" * 64) == 1 and cache.clear("a" * 64) == 0
    (cache.root / ".tmp-stale").mkdir()
    assert cache.clear() == 2
    assert list(cache.root.iterdir()) == []


def test_path_rejects_unsafe_keys(tmp_path):
    cache = ModelCache(tmp_path)
    for bad in ("", "../x", ".tmp-1", "a/b"):
        with pytest.raises(ValueError, match="invalid cache key"):
            cache.path(bad)


# --------------------------------------------------------------------------------------------
# real models (lead's persistence + pipeline)
# --------------------------------------------------------------------------------------------

def test_real_models_round_trip_and_corruption(tmp_path):
    pipeline = pytest.importorskip("destvi_core.pipeline")
    from destvi_core.data import prepare_inputs
    from destvi_core.simulate import simulate_destvi

    sim = simulate_destvi(n_spots=60, n_cells=150, n_types=3, n_genes=100, n_latent=2,
                          n_markers=10, program_size=5, n_decoys=2)
    prep = prepare_inputs(sim.sc, sim.st)
    params = pipeline.TrainingParams(sc_epochs=2, st_epochs=2, vamp_prior_p=3, n_hidden=16,
                                     device="cpu")
    cache = ModelCache(tmp_path)
    first = pipeline.fit_models(prep.sc, prep.st, "cell_type", params, cache=cache)
    second = pipeline.fit_models(prep.sc, prep.st, "cell_type", params, cache=cache)
    assert not first.from_cache and second.from_cache and first.cache_key == second.cache_key
    pd.testing.assert_frame_equal(first.st_model.get_proportions(),
                                  second.st_model.get_proportions())
    listing = cache.list()
    assert listing.loc[0, "n_spots"] == 60 and listing.loc[0, "sc_epochs"] == 2
    # the proportions saved with the entry are exactly the model's, readable without loading it
    saved = cache.proportions(first.cache_key, prep.st.obs_names)
    pd.testing.assert_frame_equal(saved, second.st_model.get_proportions(), check_dtype=False)
    assert cache.proportions(first.cache_key, prep.st.obs_names[:-1]) is None  # other spots
    assert cache.proportions("0" * 64, prep.st.obs_names) is None  # no such entry
    saved_file = cache.path(first.cache_key) / "proportions.npy"
    blob = saved_file.read_bytes()
    saved_file.write_bytes(blob[:50])  # damaged: ignored, never raised
    assert cache.proportions(first.cache_key, prep.st.obs_names) is None
    saved_file.write_bytes(blob)
    weights = cache.path(first.cache_key) / "destvi.pt"
    weights.write_bytes(weights.read_bytes()[:100])  # truncate
    with pytest.warns(DestVIWarning, match="was corrupted .* will be retrained"):
        third = pipeline.fit_models(prep.sc, prep.st, "cell_type", params, cache=cache)
    assert not third.from_cache and cache.keys() == [first.cache_key]


def test_prepared_demo_is_built_once_then_read_from_disk(tmp_path, monkeypatch):
    import destvi_core.simulate as simulate
    from destvi_core.cache import prepared_demo

    sc, st, report, messages, gene_sets = prepared_demo(0, root=tmp_path)
    assert (tmp_path / "demo").is_dir() and report["n_spots"] == st.n_obs

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the demo was rebuilt instead of read from disk")

    monkeypatch.setattr(simulate, "demo_dataset", no_rebuild)
    sc2, st2, report2, _, gene_sets2 = prepared_demo(0, root=tmp_path)
    assert (sc.X != sc2.X).nnz == 0 and (st.X != st2.X).nnz == 0
    assert list(st.obs_names) == list(st2.obs_names) and report2 == report
    assert gene_sets2 == gene_sets
    # the digest recorded at build time is the data's, so the app can skip hashing the demo
    from destvi_core.cache import data_digest, prepared_demo_digest

    assert prepared_demo_digest(0, root=tmp_path) == data_digest(sc2, st2, "cell_type")
    assert prepared_demo_digest(1, root=tmp_path) is None


def test_first_map_path_does_not_import_torch():
    """Parameters, hashing the data and reading a cache entry's proportions must not import
    torch (~1 s): the app draws its first maps from these while the models load."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import sys
        import destvi_core.cache as c
        from destvi_core.pipeline import TrainingParams, preset
        sc, st = __import__("tests.test_cache", fromlist=["make_pair"]).make_pair()
        params = preset("quick").cache_dict()
        TrainingParams(device="auto").validate()
        c.ModelCache("/nonexistent").proportions(c.cache_key(sc, st, "cell_type", params), st.obs_names)
        c.ModelCache("/nonexistent").list()
        print("torch" in sys.modules)
    """)
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
