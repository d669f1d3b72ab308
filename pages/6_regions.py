"""Regions: draw regions on the tissue (lasso / box), name them, compare their composition."""

import streamlit as st

from studio_ui import charts, maps, region_loaders, region_state, region_ui, state, ui

ui.page_title("Regions")
st.caption("Point at the tissue: select spots free-hand (lasso) or with a box, save them as named "
           "regions, and compare what is in them. Regions travel in the link, feed the DE page "
           "as groups and are part of *Export everything*.")
models, data, types, spots, image = ui.model_page()
region_state.regions(len(spots))  # regions from a shared link, if any
if state.flag("region_url_error"):
    st.warning(f"Regions from the link were not restored: {state.flag('region_url_error')}",
               icon=":material/link_off:")
    state.set_flag("region_url_error", None)
thresholds = ui.current_thresholds(models)
COLOURINGS = ["dominant type", "regions", *[f"{t} proportion" for t in types]]


def region_map(colour: str, img):
    key = (models.key, colour, ui.width(520), img is not None and data.key,
           region_state.encode_regions() if colour == "regions" else None)
    return region_loaders.cached_map("regions", key, lambda: build_region_map(colour, img))


def build_region_map(colour: str, img):
    width = ui.width(520)
    if colour == "regions":
        colors = {**region_ui.region_colors(), "no region": maps.GREY}
        return maps.label_map(spots, region_ui.region_label_array(len(spots)), colors,
                              "Regions", width=width, image=img, select=True, types=types)
    if colour.endswith(" proportion") and colour[: -len(" proportion")] in types:
        ct = colour[: -len(" proportion")]
        return charts.proportion_map(spots, ct, types, width=width, image=img, title=colour, select=True)
    return charts.dominant_map(spots, types, width=width, image=img, select=True)


def regions_view() -> None:
    """Map, selection, saved regions and the composition panel."""
    c1, c2 = st.columns([3, 2])
    colour = c1.selectbox("Colour the map by", COLOURINGS, key="reg_colour")
    show_img = image is not None and c2.toggle("Show histology image", value=True, key="reg_img")
    # side by side at a desk; stacked in presentation mode (bigger map)
    left, right = (st.container(), st.container()) if state.presentation() else st.columns([3, 2])
    with left:
        spot_map = region_map(colour, image if show_img else None)
        event = ui.show_chart(spot_map, key=region_ui.map_key("reg_map"), on_select="rerun", drag="lasso")
        selection = region_ui.selection_from(event, spot_map)
        ui.downloads(spot_map, region_ui.membership_table(spots), "regions_map", "reg_map")
    with right:
        st.markdown("##### Selection")
        region_ui.selection_saver(selection, "reg_sel")
        st.markdown("##### Saved regions")
        region_ui.regions_manager(spots)
    st.subheader("Composition")
    region_ui.composition_panel(models, spots, types, thresholds, selection)


regions_view()
