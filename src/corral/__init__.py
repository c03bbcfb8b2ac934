"""Corral: lend isolated, disposable Linux desktop PCs to AI agents, safely."""

__all__ = ["__version__"]

__version__ = "0.1.0"
