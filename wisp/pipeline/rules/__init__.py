"""Rule modules: importing this package declares every stage of the pipeline."""

from wisp.pipeline.rules import calib, illumination, sky

__all__ = ["calib", "illumination", "sky"]
