"""The embedded local stack behind ``wisp up``: NATS, SQLite, filesystem store, one process per service.

Every service runs as its own OS process (``python -m <module>``), exactly as in a cluster; this module
only chooses ports, prepares the data directory, and supervises the processes: a service that dies is
restarted, Ctrl-C or SIGTERM stops everything cleanly (services drain first, NATS last).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wisp.errors import Transient
from wisp.natsserver import NatsServer, free_port

log = logging.getLogger(__name__)

# The services of the stack, by the module that runs each (the kernel never imports them).
SERVICE_MODULES: dict[str, str] = {
    "ingest": "services.ingest",
    "calib": "services.calib",
    "astrometry": "services.astrometry",
    "catalog": "services.catalog",
    "coadd": "services.coadd",
    "qc": "services.qc",
}
GATEWAY_MODULE = "gateway"
STACK_FILE = "stack.json"


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalStack:
    """Start, supervise and stop the local stack under ``data_dir``."""

    def __init__(self, data_dir: Path, gateway_port: int, host: str = "127.0.0.1",
                 watch_dir: Path | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.gateway_port = gateway_port
        self.watch_dir = (watch_dir or self.data_dir / "inbox").resolve()
        self.nats: NatsServer | None = None
        self.children: list[Child] = []
        self.service_ports = {name: free_port(host) for name in SERVICE_MODULES}
        self._stopping = threading.Event()

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    def environment(self, nats_url: str) -> dict[str, str]:
        """The WISP_* variables every child process gets."""
        env = dict(os.environ)
        env.update({
            "WISP_DATA_DIR": str(self.data_dir),
            "WISP_DB_URL": f"sqlite:///{self.data_dir / 'wisp.sqlite'}",
            "WISP_STORE_URL": (self.data_dir / "objects").as_uri(),
            "WISP_NATS_URL": nats_url,
            "WISP_GATEWAY_URL": self.gateway_url,
            "WISP_WATCH_DIR": str(self.watch_dir),
            "WISP_SERVICES": ",".join(f"{n}={self.host}:{p}" for n, p in self.service_ports.items()),
        })
        return env

    def start(self) -> None:
        """Prepare the directory, run migrations, start NATS and every process."""
        from wisp.bus import ensure_streams_at
        from wisp.db import migrate

        for sub in ("logs", "nats", "objects", "tmp"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self.watch_dir.mkdir(parents=True, exist_ok=True)
        migrate(f"sqlite:///{self.data_dir / 'wisp.sqlite'}")
        self.nats = NatsServer.start(
            host=self.host, port=free_port(self.host), monitor_port=free_port(self.host),
            store_dir=self.data_dir / "nats", log_file=self.data_dir / "logs" / "nats.log",
        )
        ensure_streams_at(self.nats.url)
        env = self.environment(self.nats.url)
        logs = self.data_dir / "logs"
        for name, module in SERVICE_MODULES.items():
            child_env = dict(env, WISP_GRPC_PORT=str(self.service_ports[name]))
            self.children.append(Child(name, [sys.executable, "-m", module], child_env, logs / f"{name}.log"))
        self.children.append(Child(
            "gateway", [sys.executable, "-m", GATEWAY_MODULE, "--host", self.host,
                        "--port", str(self.gateway_port)], env, logs / "gateway.log"))
        for child in self.children:
            child.start()
        self._write_stack_file()

    def _write_stack_file(self) -> None:
        info = {
            "gateway_url": self.gateway_url,
            "nats_url": self.nats.url if self.nats else None,
            "pids": {c.name: c.proc.pid for c in self.children if c.proc},
            "services": {n: f"{self.host}:{p}" for n, p in self.service_ports.items()},
            "watch_dir": str(self.watch_dir),
        }
        tmp = self.data_dir / (STACK_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(self.data_dir / STACK_FILE)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the gateway's /health answers 200 (every service ready)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    raise Transient(f"{child.name} exited with status {child.proc.returncode} during start-up; "
                                    f"see {child.log_path}", code="stack.start_failed")
            try:
                r = httpx.get(self.gateway_url + "/health", timeout=2.0)
                if r.status_code == 200:
                    return
                last = r.text[:300]
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise Transient(f"the stack did not become ready within {timeout_s:.0f} s: {last}",
                        code="stack.not_ready")

    def supervise(self, poll_s: float = 0.5, max_restarts_per_min: int = 5) -> None:
        """Restart children that die, until :meth:`request_stop`. A crash loop stops the stack."""
        while not self._stopping.wait(poll_s):
            for child in self.children:
                if child.alive() or self._stopping.is_set():
                    continue
                code = child.proc.returncode if child.proc else None
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > max_restarts_per_min:
                    log.error("%s keeps crashing; stopping the stack (see %s)", child.name, child.log_path)
                    self._stopping.set()
                    return
                log.warning("%s exited with status %s; restarting it", child.name, code)
                child.start()
                self._write_stack_file()

    def request_stop(self) -> None:
        self._stopping.set()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM every process (they drain), then SIGKILL what is left; NATS last."""
        self._stopping.set()
        for child in reversed(self.children):
            if child.alive() and child.proc is not None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", child.name, grace_s)
                child.proc.kill()
                child.proc.wait()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
        (self.data_dir / STACK_FILE).unlink(missing_ok=True)
