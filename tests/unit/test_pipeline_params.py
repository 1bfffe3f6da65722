"""Stage parameters: defaults, instrument defaults, request overrides, checked with hints."""

from __future__ import annotations

from pathlib import Path

import pytest

from wisp.errors import ConfigError, InvalidInput
from wisp.instruments.loader import load_description
from wisp.pipeline.params import check, check_all, effective, parse_assignment

pytestmark = pytest.mark.unit


def test_misspelt_names_get_a_hint() -> None:
    with pytest.raises(InvalidInput, match=r"unknown parameter of stage reduce 'cr_sigclp' .did you mean 'cr_sigclip'"):
        check("reduce", {"cr_sigclp": 5})
    with pytest.raises(InvalidInput, match="did you mean 'reduce'"):
        check_all({"reduse": {"cr_sigclip": 5}})
    with pytest.raises(InvalidInput, match=r"'medain_rows' is not allowed .did you mean 'median_rows'"):
        check("reduce", {"overscan_method": "medain_rows"})


def test_values_are_type_checked() -> None:
    assert check("reduce", {"cr_sigclip": 5}) == {"cr_sigclip": 5.0}
    for bad in ({"cosmic_rays": "yes"}, {"overscan_order": 1.5}, {"cr_sigclip": "high"}, {"maxiters": True}):
        with pytest.raises(InvalidInput, match="expected"):
            check("reduce" if "maxiters" not in bad else "master_bias", bad)


def test_overrides_win_over_instrument_defaults_over_stage_defaults() -> None:
    definition = {"parameters": {"reduce": {"cr_sigclip": 6.0, "trails": False}}}
    values = effective("reduce", definition, {"cr_sigclip": 4.0})
    assert values["cr_sigclip"] == 4.0 and values["trails"] is False and values["cosmic_rays"] is True
    assert values["cr_sigfrac"] == 0.5
    assert effective("master_bias", None)["sigma"] == 3.0


def test_assignments_are_parsed() -> None:
    assert parse_assignment("reduce.cr_sigclip=5") == ("reduce", "cr_sigclip", 5)
    assert parse_assignment("reduce.trails=false") == ("reduce", "trails", False)
    with pytest.raises(InvalidInput, match=r"STAGE\.NAME=VALUE"):
        parse_assignment("cr_sigclip=5")


def test_a_description_with_a_misspelt_parameter_is_refused(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "wisp" / "instruments" / "data" / "simcam.yaml"
    text = src.read_text() + "\nparameters:\n  reduce: {cr_sigclp: 5.0}\n"
    path = tmp_path / "cam.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="did you mean 'cr_sigclip'"):
        load_description(path)
    path.write_text(src.read_text() + "\nparameters:\n  reduce: {cr_sigclip: 5.0}\n")
    assert load_description(path).parameters == {"reduce": {"cr_sigclip": 5.0}}
