"""The whole local stack as real processes (``wisp up``), shared by the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from wisp.natsserver import free_port


@dataclass
class Stack:
    """A running ``wisp up``: its URL, data directory and process."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]

    def info(self) -> dict:  # type: ignore[type-arg]
        return json.loads((self.data_dir / "stack.json").read_text())

    def wisp(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, WISP_GATEWAY_URL=self.url)
        return subprocess.run([sys.executable, "-m", "wisp.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=timeout)


def start_stack(data_dir: Path, **env: str) -> Stack:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wisp.cli.main", "up", "--data-dir", str(data_dir), "--port", str(port)],
        env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"wisp up exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return Stack(url, data_dir, proc)
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("wisp up did not become ready in 60 s")


def stop_stack(stack: Stack) -> int:
    stack.proc.send_signal(signal.SIGINT)
    try:
        return stack.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(stack.proc.pid, signal.SIGKILL)
        raise


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack per test module, with a 3 MB upload limit so that 'oversized' is cheap to test."""
    s = start_stack(tmp_path_factory.mktemp("stack"), WISP_MAX_UPLOAD_BYTES=str(3 * 1024 * 1024))
    yield s
    assert stop_stack(s) == 0
