"""Rule modules: importing this package declares every stage of the pipeline."""

from wisp.pipeline.rules import calib, sky

__all__ = ["calib", "sky"]
