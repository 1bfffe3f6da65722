"""Quality flags: evaluating metrics against thresholds, defaults and per-filter overrides."""

from __future__ import annotations

import math

import pytest

from wisp import quality
from wisp.quality import (
    ASTROMETRY,
    BAD_PIXELS,
    DEFAULT_THRESHOLDS,
    FLAG_NAMES,
    KIND_METRICS,
    METRICS,
    QC_MASK,
    SEEING,
    ZEROPOINT,
    Bounds,
    evaluate,
    flag_names,
    thresholds_for,
)


def test_flag_bits_are_distinct_powers_of_two() -> None:
    bits = list(FLAG_NAMES)
    assert all(b > 0 and b & (b - 1) == 0 for b in bits) and len(set(bits)) == len(bits)
    assert QC_MASK == sum(bits) == 1023
    assert (quality.SEEING, quality.ASTROMETRY, quality.ZEROPOINT, quality.NOISE, quality.FEW_SOURCES,
            quality.BAD_PIXELS, quality.MASTER_NOISE) == (1, 2, 4, 8, 16, 32, 64)


def test_every_declared_metric_has_a_flag_and_every_default_is_declared() -> None:
    for kind, names in KIND_METRICS.items():
        assert names and all(n in METRICS for n in names), kind
    for kind, section in DEFAULT_THRESHOLDS.items():
        assert set(section) <= set(KIND_METRICS[kind]), kind
    assert all(bit in FLAG_NAMES for bit, _ in METRICS.values())


def test_evaluate_flags_and_explains() -> None:
    thresholds = {"seeing_arcsec": Bounds(max=2.5), "dq_bad_fraction": Bounds(max=0.05),
                  "astrom_rms_mas": Bounds(max=100), "n_ref": Bounds(min=10)}
    flags, reasons = evaluate({"seeing_arcsec": 3.1, "dq_bad_fraction": 0.01, "n_ref": 4, "other": 1.0}, thresholds)
    assert flags == SEEING | ASTROMETRY
    assert reasons == ["n_ref = 4 is below the minimum 10 (ASTROMETRY)",
                       "seeing_arcsec = 3.1 is above the maximum 2.5 (SEEING)"]
    assert evaluate({"seeing_arcsec": 2.5, "n_ref": 10}, thresholds) == (0, [])  # bounds are inclusive
    assert evaluate({}, thresholds) == (0, [])  # not measured: not judged


def test_non_numbers_are_outside_any_bounds() -> None:
    flags, reasons = evaluate({"zeropoint_mag": math.nan}, {"zeropoint_mag": Bounds(min=20)})
    assert flags == ZEROPOINT and "not a finite number" in reasons[0]
    flags, _ = evaluate({"dq_bad_fraction": "lots"}, {"dq_bad_fraction": Bounds(max=0.1)})
    assert flags == BAD_PIXELS


def test_thresholds_merge_defaults_overrides_and_filters() -> None:
    qc = {"astrometry": {"n_ref": Bounds(min=20), "astrom_rms_mas": None,
                         "zeropoint_mag": Bounds(min=24.0, max=26.0, filters={"u": Bounds(min=22.0)})}}
    r = thresholds_for("astrometry", qc, "r")
    assert r == {"n_ref": Bounds(min=20), "zeropoint_mag": Bounds(min=24.0, max=26.0)}  # rms default removed
    u = thresholds_for("astrometry", qc, "u")
    assert u["zeropoint_mag"] == Bounds(min=22.0, max=26.0)  # the filter's end replaces, the other stays
    assert thresholds_for("astrometry", None, "r") == DEFAULT_THRESHOLDS["astrometry"]
    assert thresholds_for("no-such-kind") == {}


def test_flag_names() -> None:
    assert flag_names(0) == []
    assert flag_names(SEEING | BAD_PIXELS | 4096) == ["SEEING", "BAD_PIXELS", "BIT12"]


def test_bounds_to_dict() -> None:
    b = Bounds(min=1.0, filters={"g": Bounds(max=3.0)})
    assert b.to_dict() == {"min": 1.0, "filters": {"g": {"max": 3.0}}}


@pytest.mark.parametrize("kind", sorted(KIND_METRICS))
def test_default_thresholds_pass_on_no_metrics(kind: str) -> None:
    assert evaluate({}, thresholds_for(kind)) == (0, [])
