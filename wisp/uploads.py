"""The service side of a client-streamed upload: header first, then bytes, spooled to a local file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from wisp.errors import InvalidInput, PayloadTooLarge, WispError
from wisp.v1 import common_pb2


async def spool_upload(chunks: AsyncIterator[Any], dest: Path, max_bytes: int) -> Any:
    """Write the data chunks to ``dest``; return the ``UploadHeader``. Refuse a protocol error, more than
    ``max_bytes``, or fewer bytes than the header declared."""
    header = None
    received = 0
    with dest.open("wb") as out:
        async for chunk in chunks:
            if chunk.HasField("header"):
                if header is not None:
                    raise InvalidInput("the upload carried two headers", code="upload.protocol")
                header = chunk.header
                continue
            if header is None:
                raise InvalidInput("the upload must start with its header", code="upload.protocol")
            received += len(chunk.data)
            if received > max_bytes:
                raise PayloadTooLarge(f"{header.filename}: upload exceeds the limit of {max_bytes} bytes",
                                      code="input.too_large", file=header.filename, limit=max_bytes)
            await asyncio.to_thread(out.write, chunk.data)
    if header is None:
        raise InvalidInput("empty upload stream", code="upload.protocol")
    if header.declared_size >= 0 and received != header.declared_size:
        raise InvalidInput(f"{header.filename}: upload incomplete: {received} of {header.declared_size} bytes arrived",
                           code="upload.incomplete", file=header.filename, expected=header.declared_size,
                           found=received)
    return header


def clear_spool(spool_dir: Path) -> None:
    """Create ``spool_dir`` and remove uploads left by a killed predecessor (they were never accepted)."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    for stale in spool_dir.glob("upload-*"):
        stale.unlink(missing_ok=True)


def error_info(exc: WispError) -> common_pb2.ErrorInfo:
    """The wire form of an error: its code, message, and details as text (lists joined by ', ')."""
    def text(value: object) -> str:
        return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)

    return common_pb2.ErrorInfo(code=exc.code, message=exc.message,
                                details={k: text(v) for k, v in exc.details.items()})
