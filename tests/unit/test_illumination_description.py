"""The ``calibration: illumination:`` rule of a camera description: read, checked with clear errors, stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.instruments import simcam_with_illumination
from wisp.errors import ConfigError
from wisp.instruments import load_registry
from wisp.instruments.loader import load_description
from wisp.instruments.schema import IlluminationRule

BASE = """
name: cam
match: {INSTRUME: CAM}
keywords:
  obstype: {keys: [IMAGETYP], map: {OBJECT: science}}
  exptime: {keys: [EXPTIME]}
  date_obs: {keys: [DATE-OBS]}
chip_discovery: {}
filters: [{name: r}, {name: i}, {name: z}]
calibration:
  illumination: RULE
"""


def _load(tmp_path: Path, rule: str) -> IlluminationRule:
    path = tmp_path / "cam.yaml"
    path.write_text(BASE.replace("RULE", rule))
    out = load_description(path).calibration["illumination"]
    assert isinstance(out, IlluminationRule)
    return out


def test_a_rule_is_read_with_defaults(tmp_path: Path) -> None:
    rule = _load(tmp_path, "{filters: [i, z], fringe_filters: [z]}")
    assert rule == IlluminationRule(min_frames=4, validity_days=3.0, filters=("i", "z"), fringe_filters=("z",))
    rule = _load(tmp_path, "{filters: r, min_frames: 6, validity_days: 1.5}")
    assert rule.filters == ("r",) and rule.fringe_filters == () and rule.min_frames == 6


@pytest.mark.parametrize(("rule", "field", "words"), [
    ("{filters: [i], fringe_filter: [i]}", "calibration.illumination.fringe_filter", "did you mean 'fringe_filters'"),
    ("{filters: [I]}", "calibration.illumination.filters[0]", "'I' is not a filter of this camera"),
    ("{filters: [r, zz]}", "calibration.illumination.filters[1]", "did you mean 'z'"),
    ("{filters: [r], fringe_filters: [i]}", "calibration.illumination.fringe_filters[0]",
     "not a filter of this rule's 'filters'"),
    ("{fringe_filters: [i]}", "calibration.illumination.filters", "list the filters"),
    ("{filters: [r], min_frames: 2}", "calibration.illumination.min_frames", "integer >= 3"),
    ("{filters: [r], validity_days: 0}", "calibration.illumination.validity_days", "> 0"),
    ("{filters: {r: 1}}", "calibration.illumination.filters", "list of filter names"),
])
def test_bad_rules_name_the_field(tmp_path: Path, rule: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, rule)
    assert info.value.details.get("field") == field and words in info.value.message


def test_unknown_calibration_kind_has_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text(BASE.replace("  illumination: RULE", "  ilumination: {filters: [r]}"))
    with pytest.raises(ConfigError, match="did you mean 'illumination'"):
        load_description(path)


def test_simcam_asks_only_in_its_test_variant(tmp_path: Path) -> None:
    assert "illumination" not in load_registry().descriptions["simcam"].calibration
    variant = load_registry([simcam_with_illumination(tmp_path).parent]).descriptions["simcam"]
    rule = variant.calibration["illumination"]
    assert isinstance(rule, IlluminationRule) and rule.filters == ("r", "i") and rule.fringe_filters == ("i",)
    stored = json.loads(json.dumps(variant.to_dict()))["calibration"]["illumination"]  # as the DB keeps it
    assert stored == {"min_frames": 4, "validity_days": 3.0, "filters": ["r", "i"], "fringe_filters": ["i"]}
