"""Spatial maps (studio_ui.maps / map_render / map_export): renderings, hover, selections, downloads."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from _analysis_fakes import hex_coords

pytest.importorskip("plotly")
import plotly  # noqa: E402
import plotly.io as pio  # noqa: E402

from studio_ui import map_export, map_render, maps  # noqa: E402

TYPES = ["B cells", "T/NK", "Mono"]


def spot_table(n_side: int, sd: bool = False) -> pd.DataFrame:
    c = hex_coords(n_side, n_side) * 100
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(len(TYPES)), len(c))
    df = pd.DataFrame({"spot": [f"s{i}" for i in range(len(c))], "x": c[:, 0], "y": c[:, 1]})
    df = pd.concat([df, pd.DataFrame(p, columns=TYPES)], axis=1)
    df["dominant"] = np.asarray(TYPES)[p.argmax(1)]
    df["dominant_prop"] = p.max(1)
    if sd:
        for t in TYPES:
            df[f"sd:{t}"] = 0.01
    return df


def as_json(spot_map: maps.SpotMap) -> dict:
    """What Streamlit sends (the figure is validated by Plotly on the way)."""
    fig = plotly.tools.return_figure_from_figure_or_data(spot_map.figure, validate_figure=True)
    return json.loads(pio.to_json(fig, validate=False))


IMAGE = {"url": map_render.png_data_url(np.full((4, 4, 3), 200, np.uint8)),
         "x0": 0.0, "x1": 3000.0, "y0": 0.0, "y1": 2800.0}


@pytest.mark.parametrize("n_side,kind", [(20, "svg"), (70, "gl"), (110, "raster")])
def test_every_map_builds_a_valid_figure(n_side, kind):
    df = spot_table(n_side)
    n = len(df)
    built = {
        "proportion": maps.proportion_map(df, "T/NK", TYPES, select=True),
        "dominant": maps.dominant_map(df, TYPES, select=True),
        "value": maps.value_map(df, df["Mono"].to_numpy(), "expr", mask=df["Mono"].to_numpy() > 0.2),
        "group": maps.group_map(df, np.where(df["T/NK"] > 0.3, "group 1", "not used")),
        "colour": maps.colour_map(df, np.zeros((n, 3), np.uint8), "blend", key=[("a", "#ff00ff")]),
        "rgb": maps.rgb_map(df, pd.DataFrame({"spot": df["spot"][:10], "color": "#ff0000"})),
    }
    for name, m in built.items():
        assert m.kind == kind, name
        spec = as_json(m)
        assert spec["layout"]["meta"]["render"] == kind
        assert spec["layout"]["yaxis"]["range"][0] > spec["layout"]["yaxis"]["range"][1]  # y down
        if kind == "raster":
            assert spec["layout"]["images"][-1]["source"].startswith("data:image/png;base64,")
            hover = [t for t in spec["data"] if "hovertemplate" in t][0]
            assert len(hover["hovertext"]) <= maps.HOVER_MAX
        else:
            traced = sum(len(t["hovertext"]) for t in spec["data"] if "hovertext" in t)
            assert traced == n  # every spot is a point with its hover
    kept = maps.kept_map(df, "Mono", TYPES, 0.3)  # many kept maps per page: never WebGL
    assert kept.kind == ("svg" if n <= maps.SVG_MAX else "raster")


def test_hover_carries_spot_dominant_every_proportion_and_seed_spread():
    df = spot_table(10, sd=True)
    spec = as_json(maps.proportion_map(df, "Mono", TYPES))
    trace = spec["data"][0]
    assert trace["hovertext"][0] == f"s0<br>dominant: {df['dominant'][0]}"
    for t in TYPES:
        assert f"{t}: %{{customdata" in trace["hovertemplate"]
    assert trace["hovertemplate"].count(" ± %{customdata") == len(TYPES)
    assert "sd over seeds" in trace["hovertemplate"]
    plain = as_json(maps.proportion_map(spot_table(10), "Mono", TYPES))["data"][0]
    assert "±" not in plain["hovertemplate"]
    # a value map shows the value first
    value = as_json(maps.value_map(df, np.arange(len(df)), "Cd19 in B cells", types=TYPES))["data"][0]
    assert value["hovertemplate"].count("Cd19 in B cells") == 1


def test_histology_underlay_and_public_signature():
    df = spot_table(10)
    m = maps.value_map(df, df["Mono"].to_numpy(), "x", width=300, image=IMAGE, title="t",
                       mask=np.ones(len(df), bool))
    spec = as_json(m)
    assert spec["layout"]["images"][0]["source"] == IMAGE["url"]
    assert spec["layout"]["images"][0]["layer"] == "below"
    big = as_json(maps.proportion_map(spot_table(110), "Mono", TYPES, image=IMAGE))
    assert [i["layer"] for i in big["layout"]["images"]] == ["below", "above"]  # spots over tissue
    assert spec["layout"]["xaxis"]["range"][1] >= 3000  # ranges include the image
    assert spec["layout"]["title"]["text"] == "t"


def test_raster_paints_every_spot_its_own_colour():
    df = spot_table(30)
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    geom = map_render.geometry(x, y, 300)
    pixels = map_render.pixel_spots(x, y, geom, scale=2.0)
    assert map_render.pixel_spots(x, y, geom, scale=2.0) is pixels  # cached
    col = ((x - geom.x0) / (geom.x1 - geom.x0) * pixels.shape[1]).astype(int)
    row = ((y - geom.y0) / (geom.y1 - geom.y0) * pixels.shape[0]).astype(int)
    assert (pixels[row, col] == np.arange(len(x))).mean() > 0.99  # the pixel at a spot is that spot
    assert (pixels == -1).any()  # outside the tissue: transparent
    rgba = map_render.categorical_rgba(df["dominant"].to_numpy(), {"Mono": "#ff0000"})
    image = map_render.paint(pixels, rgba)
    mono = df["dominant"].to_numpy()[pixels[row, col]] == "Mono"
    assert (image[row[mono], col[mono], :3] == [255, 0, 0]).all()
    assert (image[pixels < 0, 3] == 0).all()


def test_spread_sample_is_bounded_and_covers_the_tissue():
    df = spot_table(120)
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    idx = map_render.spread_sample(x, y, 1000)
    assert 500 < len(idx) <= 1000 and np.all(np.diff(idx) > 0)
    for qx in (x < np.median(x), x >= np.median(x)):
        for qy in (y < np.median(y), y >= np.median(y)):
            assert (qx & qy)[idx].mean() > 0.15  # every quadrant sampled
    assert len(map_render.spread_sample(x[:50], y[:50], 1000)) == 50


def _event(**selection):
    return {"selection": {"points": [], "point_indices": [], "box": [], "lasso": [], **selection}}


@pytest.mark.parametrize("n_side", [20, 110])
def test_selection_shapes_become_exact_spot_masks(n_side):
    df = spot_table(n_side)
    m = maps.proportion_map(df, "Mono", TYPES, select=True)
    x, y = df["x"].to_numpy(), df["y"].to_numpy()
    box = _event(box=[{"x": [200, 900], "y": [950, 150]}])
    expected = (x >= 200) & (x <= 900) & (y >= 150) & (y <= 950)
    assert (maps.selection_mask(box, m) == expected).all()
    tri = {"x": [1000.5, 1800.5, 1000.5], "y": [1000.5, 1000.5, 1800.5]}
    lasso = maps.selection_mask(_event(lasso=[tri]), m)
    assert lasso.sum() > 10 and ((x[lasso] >= 1000) & (y[lasso] >= 1000)).all()
    both = maps.selection_mask(_event(lasso=[tri], box=box["selection"]["box"]), m)
    assert (both == (lasso | expected)).all()  # shift-drag adds shapes: union
    assert maps.selection_mask(_event(), m) is None and maps.selection_mask(None, m) is None


def test_clicked_points_map_back_to_spots_through_traces():
    df = spot_table(10)
    m = maps.dominant_map(df, TYPES, select=True)  # one trace per type
    curve = 1
    spots = m.trace_spots[curve]
    mask = maps.selection_mask(_event(points=[{"curve_number": curve, "point_index": 2}]), m)
    assert np.flatnonzero(mask).tolist() == [spots[2]]
    assert df["dominant"][spots[2]] == m.figure["data"][curve]["name"]


def test_small_multiples_panels_share_or_split_the_scale():
    df = spot_table(40)
    shared = maps.small_multiples(df, TYPES, shared=True, columns=2)
    own = maps.small_multiples(df, TYPES, shared=False, columns=2)
    assert len(shared.panels) == len(TYPES) and shared.kind == "raster"
    s_spec, o_spec = as_json(shared), as_json(own)
    assert len([i for i in s_spec["layout"]["images"]]) == len(TYPES)
    assert s_spec["layout"]["xaxis2"]["matches"] == "x"  # linked zoom
    assert sum("colorbar" in json.dumps(t) for t in s_spec["data"]) == 1
    assert sum("colorbar" in json.dumps(t) for t in o_spec["data"]) == len(TYPES)
    assert {p.colorbar[2] for p in shared.panels} == {float(df[TYPES].to_numpy().max())}


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("svg", b"<?xml")])
def test_downloads_render_on_the_server(fmt, magic):
    df = spot_table(20)
    for m in (maps.proportion_map(df, "Mono", TYPES, image=IMAGE), maps.dominant_map(df, TYPES),
              maps.small_multiples(df, TYPES, columns=2)):
        data = map_export.render(m, fmt, presentation=True)
        assert data.startswith(magic) and len(data) > 2000
        if fmt == "svg":
            text = data.decode()
            assert "<image" in text  # spots embedded as an image, labels as text
            assert "Mono" in text or "proportion" in text


def test_presentation_style_enlarges_fonts_without_touching_the_map():
    m = maps.dominant_map(spot_table(10), TYPES)
    big = maps.style(m.figure, True)
    assert big["layout"]["font"]["size"] > m.figure["layout"]["font"]["size"]
    assert big["data"] is m.figure["data"] and maps.style(m.figure, False) is m.figure


def test_near_black_survives_streamlit_theme_placeholders():
    """Streamlit rewrites #000000-#000040 in Plotly figures (theme placeholders): magma's black
    and blended "none" spots must not use those strings."""
    df = spot_table(10)
    spec = json.dumps(as_json(maps.value_map(df, df["Mono"].to_numpy(), "x", scheme="magma")))
    spec += json.dumps(as_json(maps.colour_map(df, np.zeros((len(df), 3), np.uint8), "blend")))
    import re

    assert not re.search(r"#0000[0-3][0-9]|#000040", spec, flags=re.I)


def test_threshold_maps_carry_a_light_hover_layer():
    df = spot_table(110)  # 12,100 spots: raster
    kept = as_json(maps.kept_map(df, "Mono", TYPES, 0.3))
    main = as_json(maps.proportion_map(df, "Mono", TYPES))
    hover_kept = [t for t in kept["data"] if "hovertext" in t][0]
    hover_main = [t for t in main["data"] if "hovertext" in t][0]
    assert len(hover_kept["hovertext"]) <= maps.HOVER_MAX_MANY and hover_kept["type"] == "scatter"
    assert maps.HOVER_MAX_MANY < len(hover_main["hovertext"]) <= maps.HOVER_MAX
