"""Simulators split by meaning; the public names are re-exported by :mod:`destvi_core.simulate`."""
