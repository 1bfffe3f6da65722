"""The nats-server helper: the venv's binary, readiness, failures with the log tail, fsync setting."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from wisp.errors import ConfigError, Transient
from wisp.natsserver import MIN_VERSION, NatsServer, free_port, nats_server_binary, server_version


def test_binary_is_the_one_in_the_virtual_environment() -> None:
    binary = nats_server_binary()
    assert not str(binary).startswith(("/usr/", "/bin/", "/sbin/"))
    assert server_version(binary) >= MIN_VERSION


def test_start_serves_jetstream_and_stop_terminates(tmp_path: Path) -> None:
    server = NatsServer.start(store_dir=tmp_path / "js", log_file=tmp_path / "logs" / "nats.log",
                              sync_interval="always")
    try:
        assert server.url == f"nats://127.0.0.1:{server.port}" and server.healthy()
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
            assert sock.recv(4096).startswith(b"INFO ")
        varz = json.load(urllib.request.urlopen(f"{server.monitor_url}/varz", timeout=2))
        assert varz["jetstream"]["config"]["sync_always"] is True
        assert Path(varz["jetstream"]["config"]["store_dir"]).is_relative_to(tmp_path / "js")
    finally:
        assert server.stop() is not None
    assert not server.is_running()
    assert "Server is ready" in (tmp_path / "logs" / "nats.log").read_text()


def test_port_in_use_fails_with_the_log_tail(tmp_path: Path, nats_server: NatsServer) -> None:
    with pytest.raises(Transient, match="address already in use"):
        NatsServer.start(port=nats_server.port, monitor_port=free_port(), store_dir=tmp_path / "js")


def test_bad_sync_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sync_interval"):
        NatsServer.start(store_dir=tmp_path / "js", sync_interval="sometimes")
