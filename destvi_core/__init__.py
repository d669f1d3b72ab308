"""DestVI Studio engine: CondSCVI + DestVI in plain PyTorch, data layer, analysis, CLI."""

__version__ = "0.1.0"
