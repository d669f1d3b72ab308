"""Several sections with one reference (destvi_core.sections) and the between-condition test
(destvi_core.analysis.sections)."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from destvi_core.analysis.sections import (compare_conditions, mannwhitney_floor,
                                           section_composition)
from destvi_core.errors import InputError
from destvi_core.sections import (find_section_files, prepare_sections, read_sections,
                                  section_conditions, split_sections)


def _cut(tiny_sim, n: int = 3) -> dict[str, ad.AnnData]:
    parts = np.array_split(np.arange(tiny_sim.st.n_obs), n)
    return {f"S{i}": tiny_sim.st[idx].copy() for i, idx in enumerate(parts)}


# ------------------------------------------------------------------ preparation
def test_one_section_is_exactly_prepare_inputs(tiny_sim):
    from destvi_core.data import prepare_inputs

    ref = prepare_inputs(tiny_sim.sc, tiny_sim.st, n_top_genes=120)
    got = prepare_sections(tiny_sim.sc, {"only": tiny_sim.st}, n_top_genes=120)
    assert list(got.sc.var_names) == list(ref.sc.var_names)
    assert (got.sc.X != ref.sc.X).nnz == 0 and (got.sections["only"].X != ref.st.X).nnz == 0
    assert got.report.n_used_genes == 120 and got.report.n_shared == ref.report.n_shared


def test_sections_share_the_genes_of_every_section_then_hvgs(tiny_sim):
    sections = _cut(tiny_sim)
    genes = list(tiny_sim.sc.var_names)
    sections["S1"] = sections["S1"][:, genes[10:]].copy()  # S1 lacks genes 0-9
    sections["S2"] = sections["S2"][:, genes[:-20]].copy()  # S2 lacks the last 20
    got = prepare_sections(tiny_sim.sc, sections, n_top_genes=100)
    used = list(got.sc.var_names)
    assert len(used) == 100 and got.report.n_shared == len(genes) - 30
    assert set(used) <= set(genes[10:-20])
    assert used == [g for g in genes if g in set(used)]  # reference order
    for name, st in got.sections.items():
        assert list(st.var_names) == used, name
    assert got.report.n_spots == {"S0": 50, "S1": 50, "S2": 50}
    assert "Sections: 3 (S0: 50 spots" in "\n".join(got.report.summary_lines())
    # the HVGs are those of the reference restricted to the common genes
    from destvi_core.data import select_hvgs

    common = tiny_sim.sc[:, genes[10:-20]].copy()
    assert set(used) == set(select_hvgs(common, 100))


def test_section_with_other_gene_names_is_named_in_the_error(tiny_sim):
    sections = _cut(tiny_sim)
    bad = sections["S2"]
    bad.var_names = [f"ENSMUSG{i:011d}" for i in range(bad.n_vars)]
    with pytest.raises(InputError, match=r"section 'S2': the reference and spatial data share "
                                         r"only 0 gene"):
        prepare_sections(tiny_sim.sc, sections)


def test_too_few_genes_common_to_all_sections(tiny_sim):
    sections = _cut(tiny_sim)
    genes = list(tiny_sim.sc.var_names)
    sections["S0"] = sections["S0"][:, genes[:100]].copy()
    sections["S1"] = sections["S1"][:, genes[70:]].copy()  # only 30 genes in both
    with pytest.raises(InputError, match=r"share only 30 genes .* Fix:"):
        prepare_sections(tiny_sim.sc, sections)


def test_bad_spots_in_one_section_warn_with_its_name(tiny_sim):
    from destvi_core.errors import DestVIWarning

    sections = _cut(tiny_sim)
    coords = sections["S1"].obsm["spatial"].astype(float).copy()
    coords[:3] = np.nan
    sections["S1"].obsm["spatial"] = coords
    with pytest.warns(DestVIWarning, match=r"section 'S1': spatial: dropped 3 spots"):
        got = prepare_sections(tiny_sim.sc, sections, hvg=False)
    assert got.sections["S1"].n_obs == 47 and got.report.n_spots["S1"] == 47


def test_split_by_obs_column_keeps_each_library_image(tiny_sim):
    st = tiny_sim.st.copy()
    st.obs["library_id"] = np.repeat(["lib/a", "lib b", "c"], 50)
    st.uns["spatial"] = {"lib/a": {"images": {}, "scalefactors": {"x": 1}},
                         "c": {"images": {}, "scalefactors": {"x": 3}}}
    parts = split_sections(st, "library_id")
    assert list(parts) == ["lib_a", "lib_b", "c"]
    assert [p.n_obs for p in parts.values()] == [50, 50, 50]
    assert list(parts["lib_a"].uns["spatial"]) == ["lib/a"]
    assert list(parts["c"].uns["spatial"]) == ["c"]
    with pytest.raises(InputError, match=r"no obs column 'sample'"):
        split_sections(st, "sample")


def test_reading_a_folder_of_sections(tiny_sim, tmp_path):
    sections = _cut(tiny_sim)
    for name, adata in sections.items():
        adata.obs["condition"] = "ctrl" if name != "S2" else "treated"
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
    (tmp_path / "notes.txt").write_text("not a section")
    files = find_section_files(tmp_path)
    assert [f.name for f in files] == ["S0.h5ad", "S1.h5ad", "S2.h5ad"]
    read = read_sections(files)
    assert list(read) == ["S0", "S1", "S2"]
    assert section_conditions(read) == {"S0": "ctrl", "S1": "ctrl", "S2": "treated"}
    prepared = prepare_sections(tiny_sim.sc, read, hvg=False, conditions={"S0": "other"})
    assert prepared.conditions == {"S0": "other", "S1": "ctrl", "S2": "treated"}
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "S0.h5ad").write_bytes((tmp_path / "S0.h5ad").read_bytes())
    with pytest.raises(InputError, match=r"same section name 'S0'"):
        read_sections(files + [tmp_path / "again" / "S0.h5ad"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"holds no \.h5ad file"):
        find_section_files(tmp_path / "empty")


# ------------------------------------------------------------------ between conditions
def _composition() -> pd.DataFrame:
    return pd.DataFrame({"B cells": [0.1, 0.2, 0.3, 0.5, 0.6, 0.7],
                         "T cells": [0.4, 0.5, 0.6, 0.4, 0.5, 0.6],
                         "other": [0.5, 0.3, 0.1, 0.1, -0.1, -0.3]},
                        index=["a1", "a2", "a3", "b1", "b2", "b3"])


CONDITIONS = {"a1": "ctrl", "a2": "ctrl", "a3": "ctrl", "b1": "tx", "b2": "tx", "b3": "tx"}


def test_section_composition_is_the_mean_per_section():
    props = {"s1": pd.DataFrame({"A": [0.2, 0.4], "B": [0.8, 0.6]}),
             "s2": pd.DataFrame({"B": [1.0], "A": [0.0]})}
    table = section_composition(props)
    assert list(table.index) == ["s1", "s2"] and list(table.columns) == ["A", "B"]
    np.testing.assert_allclose(table.to_numpy(), [[0.3, 0.7], [0.0, 1.0]])


def test_welch_known_answer():
    """B cells: 0.1/0.2/0.3 vs 0.5/0.6/0.7 -> t = 0.4 / sqrt(2 * 0.01 / 3) = 4.899 on 4 df;
    the Student t CDF with 4 df has the closed form 1/2 + x/2 (1 + (1 - x^2)/2),
    x = t / sqrt(4 + t^2), so p = 0.0080499. T cells: identical groups, t = 0, p = 1."""
    res = compare_conditions(_composition(), CONDITIONS, "ctrl", "tx")
    row = res.table.set_index("cell_type").loc["B cells"]
    t = 0.4 / math.sqrt(2 * 0.01 / 3)
    x = t / math.sqrt(4 + t * t)
    p = 2 * (1 - (0.5 + x / 2 * (1 + (1 - x * x) / 2)))
    assert row["statistic"] == pytest.approx(t) and row["pvalue"] == pytest.approx(p, rel=1e-9)
    assert p == pytest.approx(0.0080499, abs=1e-6)
    assert row["difference"] == pytest.approx(0.4) and row["n_a"] == 3 and row["n_b"] == 3
    t_cells = res.table.set_index("cell_type").loc["T cells"]
    assert t_cells["statistic"] == pytest.approx(0) and t_cells["pvalue"] == pytest.approx(1)
    # BH over the three types: sorted p (p1 <= p2 <= p3) -> min(p_i * 3 / i, later ones)
    ps = res.table["pvalue"].to_numpy()
    expected = np.minimum.accumulate((ps * 3 / np.arange(1, 4))[::-1])[::-1]
    np.testing.assert_allclose(res.table["padj"].to_numpy(), np.minimum(expected, 1))
    assert res.table["cell_type"].iloc[0] in ("B cells", "other")  # sorted by p-value
    assert "3 sections of ctrl vs 3 sections of tx" in res.note


def test_mannwhitney_floor_with_few_sections():
    res = compare_conditions(_composition(), CONDITIONS, "ctrl", "tx", test="mannwhitney")
    row = res.table.set_index("cell_type").loc["B cells"]
    assert row["pvalue"] == pytest.approx(0.1)  # completely separated 3 vs 3: 2 / C(6, 3)
    assert mannwhitney_floor(3, 3) == pytest.approx(0.1)
    assert mannwhitney_floor(2, 2) == pytest.approx(1 / 3)
    assert "cannot give p below 0.10" in res.note


def test_one_section_per_condition_gives_no_p_value_and_says_why():
    comp = _composition().loc[["a1", "b1"]]
    res = compare_conditions(comp, CONDITIONS, "ctrl", "tx")
    assert res.table["pvalue"].isna().all() and res.table["padj"].isna().all()
    assert res.table.set_index("cell_type").loc["B cells", "difference"] == pytest.approx(0.4)
    assert "1 section of ctrl vs 1 section of tx" in res.note and "at least 2" in res.note


def test_comparison_errors():
    with pytest.raises(InputError, match="no section has condition 'placebo'"):
        compare_conditions(_composition(), CONDITIONS, "ctrl", "placebo")
    with pytest.raises(InputError, match="two different conditions"):
        compare_conditions(_composition(), CONDITIONS, "ctrl", "ctrl")
    with pytest.raises(InputError, match="unknown test"):
        compare_conditions(_composition(), CONDITIONS, "ctrl", "tx", test="anova")
