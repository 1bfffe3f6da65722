"""Python client of the gateway's HTTP API (used by the CLI, the demo and the tests)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from wisp.errors import InvalidInput, NotFound, Transient, WispError

RETRYABLE_STATUS = {502, 503, 504}


DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"


def gateway_url(explicit: str | None = None) -> str:
    """The gateway to talk to: ``explicit`` (e.g. ``--gateway``), else ``WISP_GATEWAY_URL``, else the default."""
    return explicit or os.environ.get("WISP_GATEWAY_URL") or DEFAULT_GATEWAY_URL


class GatewayError(WispError):
    """The gateway answered with a problem document; ``code`` and ``details`` are the server's."""


def _raise_for_problem(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    try:
        body = r.json()
    except ValueError:
        body = {"code": "http.error", "detail": r.text[:200]}
    code = str(body.get("code", "http.error"))
    message = str(body.get("detail", r.reason_phrase))
    details = {k: v for k, v in body.items() if k not in {"type", "title", "status", "code", "detail"}}
    cls: type[WispError] = GatewayError
    if r.status_code == 404:
        cls = NotFound
    elif r.status_code in RETRYABLE_STATUS:
        cls = Transient
    elif 400 <= r.status_code < 500:
        cls = InvalidInput
    err = cls(message, code=code, **details)
    err.http_status = r.status_code
    raise err


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


class WispClient:
    """Talks to ``base_url`` (``WISP_GATEWAY_URL``)."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WispClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> Any:
        try:
            r = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.TransportError as exc:
            raise Transient(f"cannot reach the gateway at {self.base_url}: {exc}",
                            code="gateway.unreachable") from None
        _raise_for_problem(r)
        return r.json()

    def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        try:
            r = self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise Transient(f"cannot reach the gateway at {self.base_url}: {exc}",
                            code="gateway.unreachable") from None
        _raise_for_problem(r)
        return r.json()

    def health(self) -> dict[str, Any]:
        """The gateway's health document (raises Transient when not ready)."""
        result: dict[str, Any] = self._get("/health")
        return result

    def _post_file(self, endpoint: str, path: Path, retry_for_s: float) -> dict[str, Any]:
        """POST a file's bytes (streamed); retry while the stack is unavailable; return the JSON answer."""
        deadline = time.monotonic() + retry_for_s
        delay = 0.5
        size = path.stat().st_size
        while True:
            try:
                r = self._http.post(endpoint, params={"filename": path.name}, content=_file_chunks(path),
                                    headers={"Content-Length": str(size),
                                             "Content-Type": "application/octet-stream"}, timeout=600)
                _raise_for_problem(r)
                result: dict[str, Any] = r.json()
                return result
            except (httpx.TransportError, Transient) as exc:
                if time.monotonic() + delay > deadline:
                    if isinstance(exc, Transient):
                        raise
                    raise Transient(f"cannot reach the gateway at {self.base_url}: {exc}",
                                    code="gateway.unreachable") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def upload(self, path: Path, *, retry_for_s: float = 120.0) -> dict[str, Any]:
        """Upload one raw file; a rejection raises :class:`InvalidInput` with the server's code and details."""
        return self._post_file("/v1/uploads", path, retry_for_s)

    def import_refcat(self, path: Path, *, retry_for_s: float = 120.0) -> dict[str, Any]:
        """Import a reference catalogue table (FITS, CSV or Parquet) through the astrometry service."""
        return self._post_file("/v1/refcats", path, retry_for_s)

    def frames(self, **filters: Any) -> dict[str, Any]:
        """Query raw frames; see ``GET /v1/frames`` for the filters."""
        result: dict[str, Any] = self._get("/v1/frames", **filters)
        return result

    def frame(self, frame_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._get(f"/v1/frames/{frame_id}")
        return result

    def frame_summary(self, **filters: Any) -> list[dict[str, Any]]:
        """Counts of raw frames grouped by observation type, filter and chip."""
        result: list[dict[str, Any]] = self._get("/v1/frames/summary", **filters)["groups"]
        return result

    def products(self, **filters: Any) -> dict[str, Any]:
        """Query products; see ``GET /v1/products`` for the filters."""
        result: dict[str, Any] = self._get("/v1/products", **filters)
        return result

    def download_product(self, product_id: str, dest: Path) -> Path:
        """Save a product's file (checksum-verified by the server as it streams)."""
        return self._download(f"/v1/products/{product_id}/file", dest)

    def sources(self, ra: float, dec: float, radius: float, **filters: Any) -> dict[str, Any]:
        """Sources within ``radius`` deg of (ra, dec) deg in the catalogues (cone search)."""
        result: dict[str, Any] = self._get("/v1/sources", ra=ra, dec=dec, radius=radius, **filters)
        return result

    def why(self, entity_id: str) -> dict[str, Any]:
        """Why these calibrations were chosen for a frame (or a product made from one), or why none."""
        result: dict[str, Any] = self._get(f"/v1/why/{entity_id}")
        return result

    def invalidate(self, product_id: str, reason: str) -> dict[str, Any]:
        """Mark a product bad; the answer lists the derived products now outdated."""
        result: dict[str, Any] = self._post_json(f"/v1/products/{product_id}/invalidate", {"reason": reason})
        return result

    def reprocess(self, product_ids: list[str] | None = None,
                  params: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Ask for outdated products (default: all) to be remade, with per-stage parameter overrides; the
        answer is the new job."""
        result: dict[str, Any] = self._post_json("/v1/reprocess", {"product_ids": product_ids, "params": params})
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        """A job's progress: what it remade, what is pending, anything extra."""
        result: dict[str, Any] = self._get(f"/v1/jobs/{job_id}")
        return result

    def lineage(self, entity_id: str, direction: str = "up") -> dict[str, Any]:
        """The lineage tree of an entity: ``up`` (its inputs) or ``down`` (what was derived from it)."""
        result: dict[str, Any] = self._get(f"/v1/lineage/{entity_id}", direction=direction)
        return result

    def download_frame(self, frame_id: str, dest: Path) -> Path:
        """Save one chip's pixels as a single-image FITS file."""
        return self._download(f"/v1/frames/{frame_id}/fits", dest)

    def _download(self, path: str, dest: Path) -> Path:
        with self._http.stream("GET", path) as r:
            if r.status_code >= 400:
                r.read()
                _raise_for_problem(r)
            with dest.open("wb") as fh:
                for chunk in r.iter_bytes():
                    fh.write(chunk)
        return dest
