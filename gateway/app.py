"""The HTTP gateway: uploads, queries, downloads and health, with an OpenAPI description at /openapi.json."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from fastapi import FastAPI

from gateway import frames, health, invalidation, lineage, products, refcats, sources, uploads, why
from gateway.problems import install_handlers
from wisp import __version__
from wisp.config import Settings, load_settings
from wisp.db import make_engine
from wisp.store import open_store
from wisp.v1 import ingest_pb2_grpc


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway application for ``settings`` (default: from the environment)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = make_engine(settings.db_url)
        app.state.store = open_store(settings)
        app.state.tmp_dir = settings.data_dir / "tmp"
        app.state.tmp_dir.mkdir(parents=True, exist_ok=True)
        app.state.channels = {name: grpc.aio.insecure_channel(addr) for name, addr in settings.services.items()}
        ingest = app.state.channels.get("ingest")
        app.state.ingest_stub = ingest_pb2_grpc.IngestStub(ingest) if ingest is not None else None
        try:
            yield
        finally:
            for channel in app.state.channels.values():
                await channel.close()
            app.state.engine.dispose()

    app = FastAPI(title="Wisp gateway", version=__version__, lifespan=lifespan,
                  description="Upload raw frames, query and download them; errors are RFC 9457 problems.")
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(uploads.router)
    app.include_router(frames.router)
    app.include_router(invalidation.router)
    app.include_router(lineage.router)
    app.include_router(products.router)
    app.include_router(refcats.router)
    app.include_router(sources.router)
    app.include_router(why.router)
    return app
