"""The optional ``qc:`` section of instrument descriptions: strict validation and the bundled values."""

from __future__ import annotations

from pathlib import Path

import pytest

from wisp.errors import ConfigError
from wisp.instruments import InstrumentDescription, load_description, load_registry
from wisp.instruments.registry import BUNDLED_DIR
from wisp.quality import Bounds, thresholds_for

BASE = """
name: cam
match: {INSTRUME: CAM}
keywords:
  obstype: {keys: [IMAGETYP]}
  exptime: {keys: [EXPTIME]}
  date_obs: {keys: [DATE-OBS]}
filters:
  - {name: g, band: g}
  - {name: r, band: r}
chip_discovery: {}
"""


def desc(tmp_path: Path, qc: str) -> InstrumentDescription:
    path = tmp_path / "cam.yaml"
    path.write_text(BASE + qc)
    return load_description(path)


def fails(tmp_path: Path, qc: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        desc(tmp_path, qc)
    return info.value


def test_valid_section_is_parsed(tmp_path: Path) -> None:
    d = desc(tmp_path, """
qc:
  reduced:
    seeing_arcsec: {max: 2.5}
    dq_bad_fraction: {max: 0.05}
    noise_ratio: null
  astrometry:
    astrom_rms_mas: {max: 100}
    n_ref: {min: 10}
    zeropoint_mag: {min: 24, filters: {g: {min: 24.5, max: 26}}}
  catalog: {n_sources: {min: 20}}
""")
    assert d.qc["reduced"] == {"seeing_arcsec": Bounds(max=2.5), "dq_bad_fraction": Bounds(max=0.05),
                               "noise_ratio": None}
    assert d.qc_thresholds("astrometry", "g")["zeropoint_mag"] == Bounds(min=24.5, max=26.0)
    assert d.qc_thresholds("astrometry", "r")["zeropoint_mag"] == Bounds(min=24.0)
    assert "noise_ratio" not in d.qc_thresholds("reduced")  # null removed the default
    assert d.qc_thresholds("reduced")["n_sources"] == thresholds_for("reduced")["n_sources"]  # default kept
    assert d.to_dict()["qc"]["astrometry"]["zeropoint_mag"] == {"min": 24.0, "filters": {"g": {"min": 24.5,
                                                                                             "max": 26.0}}}
    assert d.to_dict()["qc"]["reduced"]["noise_ratio"] is None


def test_no_section_means_defaults(tmp_path: Path) -> None:
    d = desc(tmp_path, "")
    assert d.qc == {} and d.qc_thresholds("catalog") == thresholds_for("catalog")


@pytest.mark.parametrize(("qc", "field", "words"), [
    ("qc: {reduce: {seeing_arcsec: {max: 2}}}", "qc.reduce", "did you mean 'reduced'"),
    ("qc: {reduced: {seeing_arcsc: {max: 2}}}", "qc.reduced.seeing_arcsc", "did you mean 'seeing_arcsec'"),
    ("qc: {reduced: {astrom_rms_mas: {max: 2}}}", "qc.reduced.astrom_rms_mas", "is a metric of astrometry"),
    ("qc: {reduced: {seeing_arcsec: {maximum: 2}}}", "qc.reduced.seeing_arcsec.maximum", "did you mean 'max'"),
    ("qc: {reduced: {seeing_arcsec: {}}}", "qc.reduced.seeing_arcsec", "needs 'min' and/or 'max'"),
    ("qc: {reduced: {seeing_arcsec: {min: 3, max: 2}}}", "qc.reduced.seeing_arcsec", "greater than max"),
    ("qc: {reduced: {seeing_arcsec: {max: two}}}", "qc.reduced.seeing_arcsec.max", "expected a number"),
    ("qc: {reduced: {dq_bad_fraction: {max: 1e-3}}}", "qc.reduced.dq_bad_fraction.max", "write 1.0e-3"),
    ("qc: {reduced: {seeing_arcsec: {max: true}}}", "qc.reduced.seeing_arcsec.max", "expected a number"),
    ("qc: {reduced: {seeing_arcsec: 2.5}}", "qc.reduced.seeing_arcsec", "expected a mapping"),
    ("qc: {astrometry: {zeropoint_mag: {filters: {rr: {min: 2}}}}}", "qc.astrometry.zeropoint_mag.filters.rr",
     "did you mean 'r'"),
    ("qc: {astrometry: {zeropoint_mag: {filters: {r: {filters: {}}}}}}",
     "qc.astrometry.zeropoint_mag.filters.r.filters", "unknown field"),
    ("qc: [reduced]", "qc", "expected a mapping"),
])
def test_bad_sections_name_the_field(tmp_path: Path, qc: str, field: str, words: str) -> None:
    err = fails(tmp_path, qc)
    assert err.details["field"] == field, err.message
    assert words in err.message, err.message
    assert str(tmp_path / "cam.yaml") in err.message


def test_unknown_top_level_field_hints_qc(tmp_path: Path) -> None:
    err = fails(tmp_path, "qcc: {}")
    assert "did you mean 'qc'" in err.message


def test_filters_are_free_when_the_description_lists_none(tmp_path: Path) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text(BASE.replace("filters:\n  - {name: g, band: g}\n  - {name: r, band: r}\n", "")
                    + "qc: {astrometry: {zeropoint_mag: {filters: {Clear: {min: 20}}}}}")
    assert load_description(path).qc_thresholds("astrometry", "Clear")["zeropoint_mag"] == Bounds(min=20.0)


def test_bundled_descriptions_have_sensible_thresholds() -> None:
    reg = load_registry()
    assert {p.stem for p in BUNDLED_DIR.glob("*.yaml")} == set(reg.descriptions)
    for name, d in reg.descriptions.items():
        assert d.qc, name
        assert d.qc_thresholds("reduced")["seeing_arcsec"].max is not None, name
        assert d.qc_thresholds("astrometry")["n_ref"].min is not None, name
    sim = reg.get("simcam")
    assert sim.qc_thresholds("astrometry", "u")["zeropoint_mag"] == Bounds(min=22.2)
    assert sim.qc_thresholds("astrometry", "g")["zeropoint_mag"] == Bounds(min=24.3)
    assert sim.qc_thresholds("reduced")["seeing_arcsec"] == Bounds(max=2.0)
