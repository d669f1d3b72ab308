"""Regions in the session and in the shareable link.

Regions are named sets of spots of the loaded data (boolean masks), stored per session under
the data's key (one set per section), each with its compact text (:func:`destvi_core.analysis.encode_mask`). The
link's ``reg`` value is ``name~text;name~text`` (names URL-quoted); when all regions together
exceed :data:`URL_MAX` characters the link carries ``@<content hash>`` of a file the server
keeps instead (:func:`studio_ui.region_loaders.save_region_text`). A link's regions are decoded
once the data are loaded (their number of spots is needed), and never lost on error: the
problem is reported on the page.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import state

REGION_COLORS = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377",
                 "#332288", "#117733", "#882255", "#999933", "#44AA99", "#DDCC77"]
URL_MAX = 1500


def _store() -> dict:
    """The regions of the loaded section (each section of a project keeps its own)."""
    d = state.data()
    if d is None:
        return {"data_key": None, "items": {}}
    by_data = state._get("regions_by_data") or {}
    store = by_data.get(d.key)
    if store is None:
        store = {"data_key": d.key, "items": {}}
        state._set("regions_by_data", {**by_data, d.key: store})
    return store


def _save(store: dict) -> None:
    by_data = state._get("regions_by_data") or {}
    state._set("regions_by_data", {**by_data, store["data_key"]: store})
    _refresh_url()


def regions(n_spots: int | None = None) -> dict[str, np.ndarray]:
    """``{name: bool mask over the spots}`` of the loaded data (in creation order).

    With ``n_spots``, regions pending from a shared link are decoded first (once).
    """
    if n_spots is not None:
        _apply_url_regions(int(n_spots))
    return {name: item[0] for name, item in _store()["items"].items()}


def region_texts() -> dict[str, str]:
    """``{name: encoded mask}`` of the current regions."""
    return {name: item[1] for name, item in _store()["items"].items()}


def region_color(name: str) -> str:
    names = list(_store()["items"])
    i = names.index(name) if name in names else len(names)
    return REGION_COLORS[i % len(REGION_COLORS)]


def add_region(name: str, mask: Any) -> str:
    """Store a region (InputError for a bad or taken name, or an empty selection)."""
    from destvi_core.analysis.regions import check_region_name, encode_mask
    from destvi_core.errors import InputError

    store = _store()
    name = check_region_name(name, list(store["items"]))
    mask = np.asarray(mask, dtype=bool).copy()
    if not mask.any():
        raise InputError("the selection holds no spot", "draw the lasso or box around some spots")
    mask.setflags(write=False)
    store["items"][name] = (mask, encode_mask(mask))
    _save(store)
    return name


def rename_region(old: str, new: str) -> str:
    """Rename a region (DE groups that use it follow)."""
    from destvi_core.analysis.regions import check_region_name

    store = _store()
    new = check_region_name(new, [n for n in store["items"] if n != old])
    store["items"] = {(new if n == old else n): item for n, item in store["items"].items()}
    _save(store)
    for g, spec in state.groups().items():
        if spec == f"regionset:{old}":
            state.set_group(g, f"regionset:{new}")
    return new


def delete_region(name: str) -> None:
    store = _store()
    store["items"].pop(name, None)
    _save(store)


def encode_regions() -> str:
    """All regions as one link value: ``name~mask;name~mask`` (names URL-quoted)."""
    from urllib.parse import quote

    return ";".join(f"{quote(name, safe='')}~{text}" for name, text in region_texts().items())


def decode_regions(text: str, n_spots: int) -> dict[str, np.ndarray]:
    """Inverse of :func:`encode_regions` (InputError when damaged or for other data)."""
    from urllib.parse import unquote

    from destvi_core.analysis.regions import decode_mask
    from destvi_core.errors import InputError

    out = {}
    for item in filter(None, text.split(";")):
        name, sep, body = item.partition("~")
        if not sep:
            raise InputError("the regions in this link are damaged", "draw the regions again")
        out[unquote(name)] = decode_mask(body, n_spots)
    return out


def _apply_url_regions(n_spots: int) -> None:
    pending = state._get("url_regions")
    if not pending or state.data() is None:
        return
    state._set("url_regions", None)
    from destvi_core.errors import DestVIError

    try:
        text = pending
        if pending.startswith("@"):
            from .region_loaders import load_region_text

            text = load_region_text(pending[1:])
        for name, mask in decode_regions(text, n_spots).items():
            if name not in regions():
                add_region(name, mask)
    except DestVIError as err:
        state.set_flag("region_url_error", str(err))
    _refresh_url()


def url_value() -> str | None:
    """The ``reg`` link value of the current regions (a content hash when too long)."""
    text = encode_regions()
    if not text:
        return None
    if len(text) <= URL_MAX:
        return text
    from .region_loaders import save_region_text

    return "@" + save_region_text(text)


def _refresh_url() -> None:
    if state._get("url_regions"):  # still pending: the link keeps what it brought
        return
    state._set("regions_url", url_value())
