"""The calib service: master bias, master flat and reduction, behind the generic pipeline adapter."""

from __future__ import annotations

from services.calib.stages import MasterBiasRunner, MasterFlatRunner, ReduceRunner
from wisp.config import Settings
from wisp.instruments import load_registry
from wisp.pipeline.service import PipelineService
from wisp.runtime import run_service


def make_service(settings: Settings) -> PipelineService:
    registry = load_registry(settings.instrument_paths)
    return PipelineService("calib", [MasterBiasRunner(registry), MasterFlatRunner(registry), ReduceRunner(registry)],
                           settings)


def main() -> None:
    run_service(make_service)
