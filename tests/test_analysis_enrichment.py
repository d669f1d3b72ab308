"""Offline enrichment, Enrichr fallback (mocked network)."""

import os
from pathlib import Path

import pytest

import destvi_core.analysis.enrichment as en
from destvi_core.analysis import ENRICHMENT_COLUMNS, enrich, enrich_auto, enrichr_reachable
from destvi_core.errors import InputError


def _shared_data() -> Path:
    env = os.environ.get("DESTVI_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


UNIVERSE = [f"G{i}" for i in range(2000)]
PLANTED = {
    "PLANTED_PROGRAM": UNIVERSE[100:140],
    "DECOY_A": UNIVERSE[500:560],
    "DECOY_B": UNIVERSE[130:132] + UNIVERSE[900:950],  # 2 genes shared with the planted set
    "DECOY_C": UNIVERSE[1500:1530],
}


def test_planted_set_on_top_dict():
    genes = UNIVERSE[100:130] + UNIVERSE[1000:1010]
    res = enrich(genes, PLANTED, background=UNIVERSE)
    t = res.table
    assert list(t.columns) == ENRICHMENT_COLUMNS
    assert t.iloc[0]["term"] == "PLANTED_PROGRAM"
    assert t.iloc[0]["adjusted_p_value"] < 1e-20
    assert t.iloc[0]["overlap"] == "30/40"
    assert (t["adjusted_p_value"].diff().dropna() >= 0).all()
    assert res.source == "offline: custom"
    assert "DECOY_A" not in set(t["term"])  # no overlap -> omitted


def test_gmt_file_and_list_of_libraries(tmp_path):
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{k}\tdesc\t" + "\t".join(v) + "\n" for k, v in PLANTED.items()))
    res = enrich(UNIVERSE[100:125], [gmt, {"OTHER": UNIVERSE[1800:1850]}], background=UNIVERSE)
    assert res.table.iloc[0]["term"] == "PLANTED_PROGRAM"
    assert res.table.iloc[0]["library"] == "sets.gmt"
    assert res.source == "offline: sets.gmt, custom_2"


def test_no_overlap_gives_empty_table():
    res = enrich(["nothing_here"], PLANTED, background=UNIVERSE + ["nothing_here"])
    assert len(res.table) == 0 and list(res.table.columns) == ENRICHMENT_COLUMNS


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="gene list is empty"):
        enrich([], PLANTED)
    with pytest.raises(InputError, match="does not exist"):
        enrich(["G1"], tmp_path / "missing.gmt")
    with pytest.raises(InputError, match="unsupported"):
        enrich(["G1"], 42)


def test_hallmark_set_recovered():
    path = _shared_data() / "genesets" / "mouse_hallmark.gmt"
    if not path.is_file():
        pytest.skip("shared gene sets not available")
    sets = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        sets[parts[0]] = [g for g in parts[2:] if g]
    name = "HALLMARK_OXIDATIVE_PHOSPHORYLATION" if "HALLMARK_OXIDATIVE_PHOSPHORYLATION" in sets else sorted(sets)[0]
    genes = sets[name][: int(0.8 * len(sets[name]))]
    res = enrich(genes, path)
    assert res.table.iloc[0]["term"] == name
    assert res.source == "offline: mouse_hallmark.gmt"


def test_enrichr_not_reachable_is_fast():
    import time

    t0 = time.perf_counter()
    ok = enrichr_reachable(timeout=0.5, host="unreachable.invalid")
    assert ok is False and time.perf_counter() - t0 < 5


def test_auto_falls_back_offline(monkeypatch):
    monkeypatch.setattr(en, "enrichr_reachable", lambda timeout=3.0: False)
    res = enrich_auto(UNIVERSE[100:130], offline_gene_sets=PLANTED, background=UNIVERSE)
    assert res.message.startswith("Enrichr is not reachable (no network); showing offline results from")
    assert res.table.iloc[0]["term"] == "PLANTED_PROGRAM"


def test_auto_online_error_falls_back(monkeypatch):
    import gseapy

    monkeypatch.setattr(en, "enrichr_reachable", lambda timeout=3.0: True)

    def boom(**kw):
        raise ConnectionError("connection reset")

    monkeypatch.setattr(gseapy, "enrichr", boom)
    res = enrich_auto(UNIVERSE[100:130], offline_gene_sets=PLANTED, background=UNIVERSE)
    assert "Enrichr request failed (ConnectionError)" in res.message
    assert res.table.iloc[0]["term"] == "PLANTED_PROGRAM"
    # no offline sets: empty table + message, still no exception
    res = enrich_auto(UNIVERSE[100:130], offline_gene_sets=None)
    assert len(res.table) == 0 and "no offline gene sets" in res.message


def test_auto_online_success(monkeypatch):
    import gseapy
    import pandas as pd

    class R:
        results = pd.DataFrame({"Gene_set": ["BioPlanet_2019"] * 2, "Term": ["T2", "T1"], "Overlap": ["3/50", "5/20"],
                                "P-value": [0.01, 1e-5], "Adjusted P-value": [0.02, 1e-4], "Odds Ratio": [3, 9],
                                "Combined Score": [10, 50], "Genes": ["A;B;C", "A;B;C;D;E"]})

    monkeypatch.setattr(en, "enrichr_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(gseapy, "enrichr", lambda **kw: R())
    res = enrich_auto(["A", "B"], library="BioPlanet_2019")
    assert res.source == "Enrichr: BioPlanet_2019" and res.message == ""
    assert res.table["term"].tolist() == ["T1", "T2"]
    assert res.top(1)["star"].tolist() == [True]
