"""Streamlit-side helpers of DestVI Studio: session state, cached loaders, charts, shared widgets.

Pages import from here; nothing in this package computes analysis results itself (that is
``destvi_core``'s job), it only caches, draws and wires widgets.
"""
