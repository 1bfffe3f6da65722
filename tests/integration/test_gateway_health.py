"""``GET /health`` is 503 (naming the part) when a service of the stack does not answer."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from gateway.app import create_app
from wisp.config import load_settings
from wisp.db import migrate
from wisp.natsserver import free_port


def test_health_is_503_and_names_the_missing_service(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'w.sqlite'}"
    migrate(db)
    settings = load_settings({"WISP_DATA_DIR": str(tmp_path), "WISP_DB_URL": db,
                              "WISP_SERVICES": f"ingest=127.0.0.1:{free_port()}"})
    with TestClient(create_app(settings)) as client:
        r = client.get("/health")
        assert r.status_code == 503
        body = r.json()
        assert body["components"]["database"] == "SERVING"
        assert body["components"]["store"] == "SERVING"
        assert body["components"]["ingest"].startswith("unreachable")
        # with ingest down an upload is a 503 the client may retry, not a 500
        up = client.post("/v1/uploads", params={"filename": "a.fits"}, content=b"SIMPLE  =")
        assert up.status_code == 503 and up.json()["code"] == "service.unavailable"
        assert up.headers["retry-after"]
