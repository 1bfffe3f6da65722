"""Configuration from ``WISP_*`` environment variables, validated, with errors that name the variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from wisp.errors import ConfigError

PREFIX = "WISP_"


@dataclass(frozen=True)
class Settings:
    """Everything a Wisp process needs to find its peers.

    ``data_dir`` is the root for the embedded default (SQLite file, filesystem store, NATS storage).
    ``store_url`` is ``file:///abs/path`` or ``s3://bucket`` (then the ``s3_*`` fields are used).
    ``services`` maps a service name to its gRPC address ``host:port``.
    ``nats_replicas`` is the JetStream replica count of Wisp's streams (1 locally, 3 in production).
    """

    data_dir: Path
    db_url: str
    store_url: str
    nats_url: str
    nats_replicas: int = 1
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    gateway_url: str = "http://127.0.0.1:8080"
    max_upload_bytes: int = 2 * 1024**3
    max_pixels_per_hdu: int = 400_000_000
    instrument_paths: tuple[Path, ...] = ()
    watch_dir: Path | None = None
    grpc_port: int = 0
    services: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    log_json: bool = True


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    return value.strip() if value is not None and value.strip() != "" else None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not an integer", code="config.invalid",
                          variable=PREFIX + name) from None
    if value < minimum:
        raise ConfigError(f"{PREFIX}{name}={value} must be >= {minimum}", variable=PREFIX + name)
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r} is not a boolean (use true/false)", variable=PREFIX + name)


def _url(env: Mapping[str, str], name: str, default: str, schemes: set[str]) -> str:
    raw = _get(env, name) or default
    scheme = urlparse(raw).scheme.split("+")[0]
    if scheme not in schemes:
        raise ConfigError(
            f"{PREFIX}{name}={raw!r} has scheme {scheme!r}; expected one of {sorted(schemes)}",
            variable=PREFIX + name,
        )
    return raw


def _services(env: Mapping[str, str]) -> dict[str, str]:
    raw = _get(env, "SERVICES")
    if raw is None:
        return {}
    out: dict[str, str] = {}
    for item in raw.split(","):
        name, sep, addr = item.strip().partition("=")
        host, colon, port = addr.rpartition(":")
        if not sep or not name or not colon or not host or not port.isdigit():
            raise ConfigError(
                f"{PREFIX}SERVICES item {item!r} is not NAME=HOST:PORT", variable=PREFIX + "SERVICES"
            )
        out[name] = addr
    return out


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` naming the offending variable."""
    env = os.environ if env is None else env
    data_dir = Path(_get(env, "DATA_DIR") or "./wisp-data").expanduser().resolve()
    db_url = _url(env, "DB_URL", f"sqlite:///{data_dir / 'wisp.sqlite'}", {"sqlite", "postgresql"})
    store_url = _url(env, "STORE_URL", (data_dir / "objects").as_uri(), {"file", "s3"})
    nats_url = _url(env, "NATS_URL", "nats://127.0.0.1:4222", {"nats", "tls"})
    gateway_url = _url(env, "GATEWAY_URL", "http://127.0.0.1:8080", {"http", "https"})
    s3_endpoint = _get(env, "S3_ENDPOINT")
    if store_url.startswith("s3://"):
        if not urlparse(store_url).netloc:
            raise ConfigError(f"{PREFIX}STORE_URL={store_url!r} names no bucket", variable=PREFIX + "STORE_URL")
        for name in ("S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY"):
            if _get(env, name) is None:
                raise ConfigError(
                    f"{PREFIX}{name} must be set when {PREFIX}STORE_URL is an s3:// URL",
                    variable=PREFIX + name,
                )
    level = (_get(env, "LOG_LEVEL") or "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{PREFIX}LOG_LEVEL={level!r} is not DEBUG/INFO/WARNING/ERROR",
                          variable=PREFIX + "LOG_LEVEL")
    paths = tuple(Path(p).expanduser() for p in (_get(env, "INSTRUMENT_PATH") or "").split(os.pathsep) if p)
    watch = _get(env, "WATCH_DIR")
    return Settings(
        data_dir=data_dir,
        db_url=db_url,
        store_url=store_url,
        nats_url=nats_url,
        nats_replicas=_int(env, "NATS_REPLICAS", 1, minimum=1),
        s3_endpoint=s3_endpoint,
        s3_access_key=_get(env, "S3_ACCESS_KEY"),
        s3_secret_key=_get(env, "S3_SECRET_KEY"),
        s3_secure=_bool(env, "S3_SECURE", False),
        s3_region=_get(env, "S3_REGION") or "us-east-1",
        gateway_url=gateway_url,
        max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=2880),
        max_pixels_per_hdu=_int(env, "MAX_PIXELS_PER_HDU", 400_000_000, minimum=1),
        instrument_paths=paths,
        watch_dir=Path(watch).expanduser().resolve() if watch else None,
        grpc_port=_int(env, "GRPC_PORT", 0),
        services=_services(env),
        log_level=level,
        log_json=_bool(env, "LOG_JSON", True),
    )
