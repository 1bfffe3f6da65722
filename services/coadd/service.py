"""The coadd service, behind the generic pipeline adapter."""

from __future__ import annotations

from services.coadd.stages import CoaddRunner
from wisp.config import Settings
from wisp.pipeline.service import PipelineService
from wisp.runtime import run_service


def make_service(settings: Settings) -> PipelineService:
    return PipelineService("coadd", [CoaddRunner()], settings)


def main() -> None:
    run_service(make_service)
