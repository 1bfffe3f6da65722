"""The catalog service: catalogues of solved frames and of coadds, behind the generic pipeline adapter."""

from __future__ import annotations

from services.catalog.stages import CatalogRunner, CoaddCatalogRunner
from wisp.config import Settings
from wisp.pipeline.service import PipelineService
from wisp.runtime import run_service


def make_service(settings: Settings) -> PipelineService:
    return PipelineService("catalog", [CatalogRunner(), CoaddCatalogRunner()], settings)


def main() -> None:
    run_service(make_service)
