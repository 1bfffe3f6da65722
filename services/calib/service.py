"""The calib service: master bias, dark and flat, bad-pixel maps, night-sky flats and
reduction, behind the generic pipeline adapter."""

from __future__ import annotations

from services.calib.illumination_stage import IlluminationRunner
from services.calib.reduce_stage import ReduceRunner
from services.calib.stages import (
    BadPixelMapRunner,
    MasterBiasRunner,
    MasterDarkRunner,
    MasterFlatRunner,
)
from wisp.config import Settings
from wisp.instruments import load_registry
from wisp.pipeline.service import PipelineService
from wisp.runtime import run_service


def make_service(settings: Settings) -> PipelineService:
    registry = load_registry(settings.instrument_paths)
    return PipelineService("calib", [MasterBiasRunner(registry), MasterFlatRunner(registry), ReduceRunner(registry),
                                     IlluminationRunner(registry), MasterDarkRunner(registry),
                                     BadPixelMapRunner(registry)], settings)


def main() -> None:
    run_service(make_service)
