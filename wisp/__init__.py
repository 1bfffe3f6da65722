"""Wisp: Wide-field Imaging Survey Pipeline."""

__version__ = "0.1.0"
