"""The optional ``qc:`` section of an instrument description: QC thresholds per product kind.

::

    qc:
      reduced:
        seeing_arcsec: {max: 2.5}
        dq_bad_fraction: {max: 0.05}
      astrometry:
        zeropoint_mag: {min: 24.5, filters: {u: {min: 22.5}}}
        n_ref: {min: 10}
      catalog:
        n_sources: null            # no threshold (removes the default)

Kinds and metric names are those of :data:`wisp.quality.KIND_METRICS`; unknown ones are a ConfigError
with a "did you mean" hint. See :mod:`wisp.quality` for the defaults and flag bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, Protocol

from wisp.names import did_you_mean
from wisp.quality import KIND_METRICS, Bounds

_BOUND_KEYS = ("min", "max", "filters")


class Fail(Protocol):
    """The loader's error reporter: raises a ConfigError naming the file and the field."""

    def __call__(self, field: str, problem: str, *, expected: object = None,
                 found: object = None) -> NoReturn: ...


def _hint(name: str, allowed: Sequence[str]) -> str:
    return did_you_mean(name, allowed, list_if_none=True)


def _mapping(value: Any, field: str, fail: Fail) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        fail(field, f"expected a mapping, found {type(value).__name__}", expected="mapping",
             found=type(value).__name__)
    for key in value:
        if not isinstance(key, str):
            fail(field, f"key {key!r} must be text", expected="text", found=key)
    return value


def _number(value: Any, field: str, fail: Fail) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) else ""
        fail(field, f"expected a number, found {value!r}{hint}", expected="number", found=value)
    if value != value or value in (float("inf"), float("-inf")):
        fail(field, f"expected a finite number, found {value!r}", expected="number", found=value)
    return float(value)


def _bounds(value: Any, field: str, fail: Fail, filter_names: Sequence[str], nested: bool) -> Bounds:
    allowed = _BOUND_KEYS if not nested else ("min", "max")
    d = _mapping(value, field, fail)
    for key in d:
        if key not in allowed:
            fail(f"{field}.{key}", f"unknown field '{key}'{_hint(key, allowed)}", expected=list(allowed), found=key)
    low = _number(d["min"], f"{field}.min", fail) if d.get("min") is not None else None
    high = _number(d["max"], f"{field}.max", fail) if d.get("max") is not None else None
    if low is not None and high is not None and low > high:
        fail(field, f"min {low} is greater than max {high}", found={"min": low, "max": high})
    filters: dict[str, Bounds] = {}
    for name, sub in _mapping(d.get("filters") or {}, f"{field}.filters", fail).items():
        if filter_names and name not in filter_names:
            fail(f"{field}.filters.{name}", f"'{name}' is not a filter of this description"
                 f"{_hint(name, filter_names)}", expected=list(filter_names), found=name)
        filters[name] = _bounds(sub, f"{field}.filters.{name}", fail, filter_names, nested=True)
    if low is None and high is None and not filters:
        fail(field, "needs 'min' and/or 'max' (or write null to remove the default threshold)",
             expected=list(allowed))
    return Bounds(low, high, filters)


def parse_qc(value: Any, fail: Fail, filter_names: Sequence[str] = ()) -> dict[str, dict[str, Bounds | None]]:
    """Validate a ``qc:`` section: kind -> metric -> ``{min, max, filters}`` or null (no threshold).

    ``filter_names``: the description's canonical filter names; when given, per-filter keys must be one
    of them. Any problem is raised through ``fail`` (a ConfigError naming file and field).
    """
    if value is None:
        return {}
    kinds = tuple(KIND_METRICS)
    out: dict[str, dict[str, Bounds | None]] = {}
    for kind, metrics in _mapping(value, "qc", fail).items():
        if kind not in KIND_METRICS:
            fail(f"qc.{kind}", f"unknown product kind '{kind}'{_hint(kind, kinds)}", expected=list(kinds), found=kind)
        known = KIND_METRICS[kind]
        section: dict[str, Bounds | None] = {}
        for name, raw in _mapping(metrics or {}, f"qc.{kind}", fail).items():
            field = f"qc.{kind}.{name}"
            if name not in known:
                elsewhere = sorted(k for k, names in KIND_METRICS.items() if name in names)
                hint = (f" ('{name}' is a metric of {', '.join(elsewhere)})" if elsewhere
                        else _hint(name, known))
                fail(field, f"unknown {kind} metric '{name}'{hint}", expected=list(known), found=name)
            section[name] = None if raw is None else _bounds(raw, field, fail, filter_names, nested=False)
        out[kind] = section
    return out


def qc_to_dict(qc: Mapping[str, Mapping[str, Bounds | None]]) -> dict[str, dict[str, Any]]:
    """JSON-safe form of a parsed ``qc`` section (null keeps meaning "no threshold")."""
    return {kind: {m: (b.to_dict() if b is not None else None) for m, b in sorted(section.items())}
            for kind, section in sorted(qc.items())}
