"""Stage parameters: one dataclass of defaults per stage, per-instrument defaults (the description's
``parameters:`` section), per-request overrides (a reprocess job); every name and value checked, with
"did you mean" hints. The effective values go into every task, so into the product id, and are recorded
in its lineage (``activities.params``, ``products.params``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from wisp.errors import InvalidInput
from wisp.names import did_you_mean, reject_unknown


@dataclass(frozen=True)
class CombineParams:
    """Master bias / flat / dark stacking: clip at ``sigma`` (in units of the noise given by ``clip_noise``:
    each frame's robust noise, or the per-pixel MAD of the stack), at most ``maxiters`` passes."""

    sigma: float = 3.0
    maxiters: int = 5
    clip_noise: Literal["frame", "pixel"] = "frame"


@dataclass(frozen=True)
class ReduceParams:
    """Science reduction. Overscan: ``overscan_method`` and polynomial ``overscan_order``. Cosmic rays
    (``cosmic_rays``, L.A.Cosmic on SCI/VAR): a core needs ``cr_sigclip`` sigma of the noise, its
    neighbours ``cr_sigfrac`` x that. Satellite trails (``trails``, Hough transform): a line needs
    ``trail_nsigma`` in the standardised transform."""

    overscan_method: Literal["median_rows", "mean", "poly"] = "median_rows"
    overscan_order: int = 1
    cosmic_rays: bool = True
    cr_sigclip: float = 5.0
    cr_sigfrac: float = 0.5
    trails: bool = True
    trail_nsigma: float = 7.0


@dataclass(frozen=True)
class IlluminationParams:
    """Night-sky flat and fringe frame (``services/calib/science/illumination.py``). Sources are masked where
    ``sep`` finds >= 5 px above ``mask_thresh`` sigma, grown by ``mask_dilate_px``; the masked,
    sky-normalised frames are stacked by ``method``; the super-flat is a polynomial of ``order`` fitted to
    ``box`` px cell medians of the stack; the fringe frame is smoothed by a Gaussian of ``fringe_smooth_px``
    (0: none). The frames are reduced in memory with the reduce stage's overscan parameters."""

    method: Literal["median", "sigclip_mean"] = "median"
    box: int = 32
    order: int = 3
    mask_thresh: float = 2.0
    mask_dilate_px: int = 4
    fringe_smooth_px: float = 1.5


@dataclass(frozen=True)
class DarkParams:
    """Master dark stacking: the dark-current rates (ADU/s) are clipped at ``sigma`` x each frame's noise,
    at most ``maxiters`` passes."""

    sigma: float = 3.0
    maxiters: int = 5


@dataclass(frozen=True)
class BadPixelParams:
    """Bad-pixel map (``services/calib/science/badpix.py``): hot pixels ``hot_sigma`` above their local
    model in the master bias (or dark), cold ones ``cold_sigma`` below it in the master flat, in units of
    the master's pixel noise; bad column segments ``badcol_sigma`` robust sigma off their neighbours over
    at least ``badcol_min_rows`` rows; the map grown by ``grow`` px (0: not grown)."""

    hot_sigma: float = 5.0
    cold_sigma: float = 5.0
    badcol_sigma: float = 5.0
    badcol_min_rows: int = 20
    grow: int = 0


#: stage name -> its parameter dataclass
PARAMETERS: dict[str, type[Any]] = {
    "master_bias": CombineParams,
    "master_flat": CombineParams,
    "master_dark": DarkParams,
    "bad_pixel_map": BadPixelParams,
    "reduce": ReduceParams,
    "illumination": IlluminationParams,
}


def _check_value(stage: str, name: str, value: Any, kind: Any, where: str) -> Any:
    what = f"{where}{stage}.{name}"
    if typing.get_origin(kind) is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            hint = did_you_mean(str(value), [str(a) for a in allowed], list_if_none=True)
            raise InvalidInput(f"{what}: {value!r} is not allowed{hint}", code="params.bad_value", parameter=what)
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidInput(f"{what}: expected true or false, found {value!r}", code="params.bad_value",
                               parameter=what)
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{what}: expected an integer, found {value!r}", code="params.bad_value", parameter=what)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise InvalidInput(f"{what}: expected a number, found {value!r}", code="params.bad_value", parameter=what)
        return float(value)
    raise TypeError(f"parameter {what} has an unsupported type {kind!r}")


def check(stage: str, values: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """``values`` checked against ``stage``'s parameters (names with hints, types); ``where`` prefixes
    messages (e.g. ``'parameters.'`` for a description). Raises ``InvalidInput``."""
    if stage not in PARAMETERS:
        raise InvalidInput(f"{where}{stage}: no stage with parameters by that name"
                           f"{did_you_mean(stage, list(PARAMETERS), list_if_none=True)}",
                           code="params.unknown_stage", stage=stage)
    cls = PARAMETERS[stage]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    reject_unknown(values, names, what=f"parameter of stage {stage}", code="params.unknown")
    return {k: _check_value(stage, k, v, hints[k], where) for k, v in values.items()}


def check_all(overrides: Mapping[str, Any], *, where: str = "") -> dict[str, dict[str, Any]]:
    """``{stage: {name: value}}`` checked stage by stage."""
    out = {}
    for stage, values in overrides.items():
        if not isinstance(values, Mapping):
            raise InvalidInput(f"{where}{stage}: expected a mapping of parameter names to values",
                               code="params.bad_value", stage=stage)
        out[stage] = check(stage, values, where=where)
    return out


def effective(stage: str, definition: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
    """Every parameter of ``stage``: the defaults, then the instrument description's ``parameters``
    (``definition`` as stored with the instrument), then ``overrides`` (already checked)."""
    values = dataclasses.asdict(PARAMETERS[stage]())
    values.update(((definition or {}).get("parameters") or {}).get(stage) or {})
    values.update(overrides or {})
    return values


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``'reduce.cr_sigclip=5'`` -> ``('reduce', 'cr_sigclip', 5)`` (the value read as YAML: numbers,
    true/false, strings). Raises ``InvalidInput`` for anything else."""
    import yaml

    key, sep, raw = text.partition("=")
    stage, dot, name = key.strip().partition(".")
    if not (sep and dot and stage and name):
        raise InvalidInput(f"{text!r}: write a parameter as STAGE.NAME=VALUE, e.g. reduce.cr_sigclip=5",
                           code="params.syntax")
    return stage, name, yaml.safe_load(raw)
