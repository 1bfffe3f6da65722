"""Reading and strictly validating one instrument description file (YAML).

Every problem is a :class:`~wisp.errors.ConfigError` naming the file and the field
(``keywords.filter.keys[2]``), with a "did you mean" hint for misspelt field names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from wisp.errors import ConfigError, InvalidInput
from wisp.instruments.chipdefs import parse_chips
from wisp.instruments.qc import parse_qc
from wisp.instruments.schema import (
    CALIBRATION_KINDS,
    CHIP_FIELDS,
    EXPOSURE_FIELDS,
    FROM_BITPIX,
    OBSTYPES,
    CalibrationRule,
    FilterDef,
    IlluminationRule,
    InstrumentDescription,
    KeywordRule,
    MatchValue,
    norm_token,
)
from wisp.names import did_you_mean
from wisp.pipeline.params import check_all

_TOP = ("name", "telescope", "description", "priority", "match", "image_hdus", "pixel_scale", "keywords",
        "required", "filters", "chips", "chip_discovery", "chip_keywords", "camera_id_from", "qc",
        "calibration", "parameters")
_RULE = ("keys", "map", "default", "unit", "time_keys", "time_seconds_keys", "derive")
_UNITS = {"ra": ("deg", "hourangle", "auto"), "dec": ("deg",), "exptime": ("s", "ms")}
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SECTION = re.compile(r"\[\s*\d+\s*:\s*\d+\s*,\s*\d+\s*:\s*\d+\s*\]")
_NUMERIC_CHIP = ("gain", "read_noise", "saturation")


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.1 without the yes/no/on/off booleans: ``NO``, ``OFF`` stay strings (filter names!)."""


_YamlLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class _Checker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, problem: str, *, expected: object = None, found: object = None) -> NoReturn:
        where = f"field '{field}'" if field else "top level"
        raise ConfigError(f"instrument description {self.path}: {where}: {problem}", code="config.invalid",
                          file=str(self.path), field=field or None, expected=expected, found=found)

    def mapping(self, value: Any, field: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(field, f"expected a mapping, found {type(value).__name__}", expected="mapping",
                      found=type(value).__name__)
        for key in value:
            if not isinstance(key, str):
                self.fail(field, f"key {key!r} must be text", expected="text", found=key)
            if allowed is not None and key not in allowed:
                hint = did_you_mean(key, allowed, list_if_none=True)
                self.fail(f"{field}.{key}" if field else key, f"unknown field '{key}'{hint}",
                          expected=list(allowed), found=key)
        return dict(value)

    def text(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(field, f"expected non-empty text, found {value!r}", expected="text", found=value)
        return value.strip()

    def texts(self, value: Any, field: str) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.fail(field, f"expected a keyword or a list of keywords, found {value!r}",
                      expected="list of text", found=value)
        return tuple(self.text(v, f"{field}[{i}]") for i, v in enumerate(items))

    def keys(self, value: Any, field: str) -> tuple[str, ...]:
        return tuple(" ".join(k.upper().split()) for k in self.texts(value, field))

    def number(self, value: Any, field: str, *, positive: bool = False) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(field, f"expected a number, found {value!r}", expected="number", found=value)
        if (positive and value <= 0) or value < 0:
            self.fail(field, f"must be {'> 0' if positive else '>= 0'}, found {value}", found=value)
        return float(value)

    def integer(self, value: Any, field: str, low: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            self.fail(field, f"expected an integer{f' >= {low}' if low is not None else ''}, found {value!r}",
                      expected="integer", found=value)
        return value

    def section(self, value: Any, field: str) -> str:
        text = self.text(value, field)
        if not _SECTION.fullmatch(text):
            self.fail(field, f"{text!r} is not a FITS section like '[1:2048,1:4096]'",
                      expected="[x1:x2,y1:y2]", found=text)
        return text

    def regex(self, value: Any, field: str) -> re.Pattern[str]:
        text = self.text(value, field)
        try:
            return re.compile(text, re.IGNORECASE)
        except re.error as exc:
            self.fail(field, f"invalid regular expression {text!r}: {exc}", found=text)

    def rule(self, value: Any, field: str, fname: str, chip: bool) -> KeywordRule:
        d = self.mapping(value, field, _RULE)
        if "keys" not in d and "default" not in d and "derive" not in d:
            self.fail(field, "needs 'keys' (header keywords to look for) or a 'default'", expected="keys")
        derive = d.get("derive")
        if derive is not None and (derive != "eso_outputs" or fname not in ("datasec", "biassec")):
            self.fail(f"{field}.derive", "only 'derive: eso_outputs' for datasec/biassec is supported",
                      expected="eso_outputs", found=derive)
        keys = self.keys(d["keys"], f"{field}.keys") if "keys" in d else ()
        mapping: dict[str, str | None] = {}
        if "map" in d:
            if fname not in ("obstype", "filter"):
                self.fail(f"{field}.map", "value maps are only for obstype and filter")
            raw_map = d["map"]
            if isinstance(raw_map, Mapping):
                raw_map = {str(k) if isinstance(k, int | float) and not isinstance(k, bool) else k: v
                           for k, v in raw_map.items()}
            for raw, target in self.mapping(raw_map, f"{field}.map").items():
                if target is not None:
                    target = self.text(target, f"{field}.map.{raw}")
                if fname == "obstype" and target not in OBSTYPES:
                    self.fail(f"{field}.map.{raw}", f"{target!r} is not a frame type",
                              expected=list(OBSTYPES), found=target)
                mapping[norm_token(raw)] = target
        default = d.get("default")
        if default is not None:
            default = self._default(default, f"{field}.default", fname, chip)
        unit = d.get("unit")
        if unit is not None and unit not in _UNITS.get(fname, ()):
            self.fail(f"{field}.unit", f"unit {unit!r} is not allowed for {fname}",
                      expected=list(_UNITS.get(fname, ())), found=unit)
        time_keys = self.keys(d["time_keys"], f"{field}.time_keys") if "time_keys" in d else ()
        seconds = self.keys(d["time_seconds_keys"], f"{field}.time_seconds_keys") \
            if "time_seconds_keys" in d else ()
        if (time_keys or seconds) and fname != "date_obs":
            self.fail(field, "time_keys/time_seconds_keys are only for date_obs")
        return KeywordRule(keys=keys, map=mapping, default=default, unit=unit, time_keys=time_keys,
                           time_seconds_keys=seconds, derive=derive)

    def _default(self, value: Any, field: str, fname: str, chip: bool) -> Any:
        if fname in _NUMERIC_CHIP and chip:
            if fname == "saturation" and value == FROM_BITPIX:
                return FROM_BITPIX
            return self.number(value, field, positive=True)
        if fname in ("datasec", "biassec"):
            return self.section(value, field)
        if fname == "obstype" and value not in OBSTYPES:
            self.fail(field, f"{value!r} is not a frame type", expected=list(OBSTYPES), found=value)
        if fname in ("exptime", "airmass", "ra", "dec"):
            return self.number(value, field)
        if fname == "date_obs":
            self.fail(field, "an observation date cannot have a default")
        return self.text(str(value), field)


def load_description(path: Path) -> InstrumentDescription:
    """Read and validate one description file; raise :class:`ConfigError` naming file and field."""
    c = _Checker(path)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"instrument description {path}: cannot read: {exc}", file=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"instrument description {path}: not valid YAML: {exc}", file=str(path)) from None
    if doc is None:
        c.fail("", "the file is empty")
    d = c.mapping(doc, "", _TOP)
    for need in ("name", "keywords"):
        if need not in d:
            c.fail(need, "is required")
    name = c.text(d["name"], "name")
    if not _NAME.fullmatch(name):
        c.fail("name", f"{name!r} must be lower case letters, digits, '.', '_' or '-'",
               expected="e.g. eso-wfi", found=name)
    keywords = {k: c.rule(v, f"keywords.{k}", k, chip=False)
                for k, v in c.mapping(d["keywords"], "keywords", tuple(EXPOSURE_FIELDS)).items()}
    chip_keywords = {k: c.rule(v, f"chip_keywords.{k}", k, chip=True)
                     for k, v in c.mapping(d.get("chip_keywords", {}), "chip_keywords",
                                           tuple(CHIP_FIELDS)).items()}
    match = _match(c, d.get("match", {}))
    image_hdus = _image_hdus(c, d.get("image_hdus"))
    if not match and image_hdus is None:
        c.fail("match", "a description needs 'match' keywords or an 'image_hdus' condition")
    chips, discovery = parse_chips(c, d)
    filters = _filters(c, d.get("filters", []))
    return InstrumentDescription(
        name=name, source=path,
        telescope=c.text(d["telescope"], "telescope") if "telescope" in d else None,
        description=c.text(d["description"], "description") if "description" in d else None,
        priority=c.integer(d.get("priority", 0), "priority"),
        match=match, image_hdus=image_hdus,
        pixel_scale=c.number(d["pixel_scale"], "pixel_scale", positive=True) if "pixel_scale" in d else None,
        keywords=keywords, required=_required(c, d.get("required", {}), keywords, chip_keywords),
        filters=filters, chips=chips, chip_discovery=discovery,
        chip_keywords=chip_keywords,
        camera_id_from=c.keys(d["camera_id_from"], "camera_id_from") if "camera_id_from" in d else (),
        qc=parse_qc(d.get("qc"), c.fail, [f.name for f in filters]),
        calibration=_calibration(c, d.get("calibration", {}), filters),
        parameters=_parameters(c, d.get("parameters", {})),
    )


def _parameters(c: _Checker, value: Any) -> dict[str, dict[str, Any]]:
    """Per-stage parameter defaults of this camera, checked against the stages' parameters."""
    try:
        return check_all(c.mapping(value, "parameters"), where="parameters.")
    except InvalidInput as exc:
        c.fail("parameters", exc.message)


def _calibration(c: _Checker, value: Any, filters: tuple[FilterDef, ...]) -> dict[str, CalibrationRule]:
    out: dict[str, CalibrationRule] = {}
    for kind, rule in c.mapping(value, "calibration", CALIBRATION_KINDS).items():
        field = f"calibration.{kind}"
        if kind == "illumination":
            out[kind] = _illumination(c, rule, field, filters)
            continue
        fields = c.mapping(rule, field, ("min_frames", "validity_days"))
        default = CalibrationRule()
        out[kind] = CalibrationRule(
            min_frames=c.integer(fields.get("min_frames", default.min_frames), f"{field}.min_frames", low=1),
            validity_days=c.number(fields.get("validity_days", default.validity_days), f"{field}.validity_days",
                                   positive=True))
    return out


def _illumination(c: _Checker, rule: Any, field: str, filters: tuple[FilterDef, ...]) -> IlluminationRule:
    """The night-sky flat rule: its filters must be filters of the description (when it lists any), its
    fringe filters among its filters, and >= 3 frames (a sky stack needs 3 dithered frames)."""
    fields = c.mapping(rule, field, ("filters", "fringe_filters", "min_frames", "validity_days"))
    default = IlluminationRule()
    known = [f.name for f in filters]

    def names(key: str, allowed: list[str] | None) -> tuple[str, ...]:
        raw = fields.get(key) or []
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list):
            c.fail(f"{field}.{key}", f"expected a list of filter names, found {raw!r}", expected="list of text",
                   found=raw)
        out = tuple(c.text(v, f"{field}.{key}[{i}]") for i, v in enumerate(items))
        for i, name in enumerate(out):
            if allowed is not None and name not in allowed:
                what = "a filter of this rule's 'filters'" if key == "fringe_filters" else "a filter of this camera"
                c.fail(f"{field}.{key}[{i}]", f"'{name}' is not {what}{did_you_mean(name, allowed, list_if_none=True)}",
                       expected=allowed, found=name)
        return tuple(dict.fromkeys(out))

    wanted = names("filters", known or None)
    if not wanted:
        c.fail(f"{field}.filters", "list the filters that get a night-sky flat", expected="list of filter names")
    return IlluminationRule(
        filters=wanted, fringe_filters=names("fringe_filters", list(wanted)),
        min_frames=c.integer(fields.get("min_frames", default.min_frames), f"{field}.min_frames", low=3),
        validity_days=c.number(fields.get("validity_days", default.validity_days), f"{field}.validity_days",
                               positive=True))


def _match(c: _Checker, value: Any) -> dict[str, tuple[MatchValue, ...]]:
    out: dict[str, tuple[MatchValue, ...]] = {}
    for key, raw in c.mapping(value, "match").items():
        field = f"match.{key}"
        items = raw if isinstance(raw, list) else [raw]
        if not items:
            c.fail(field, "needs at least one value")
        vals = []
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                c.fail(f"{field}[{i}]", f"expected text, found {item!r}", found=item)
            text = str(item).strip()
            regex = c.regex(text[3:], f"{field}[{i}]") if text.startswith("re:") else None
            vals.append(MatchValue(text=text, regex=regex))
        out[" ".join(key.upper().split())] = tuple(vals)
    return out


def _image_hdus(c: _Checker, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = c.integer(value, "image_hdus", 1)
        return n, n
    d = c.mapping(value, "image_hdus", ("min", "max"))
    lo = c.integer(d.get("min", 1), "image_hdus.min", 1)
    hi = c.integer(d.get("max", 10**6), "image_hdus.max", lo)
    return lo, hi


def _required(c: _Checker, value: Any, keywords: dict[str, KeywordRule],
              chip_keywords: dict[str, KeywordRule]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for group, fields in c.mapping(value, "required", ("all", *OBSTYPES, "chip")).items():
        names = c.texts(fields, f"required.{group}") if fields else ()
        known: Mapping[str, Any] = chip_keywords if group == "chip" else keywords
        for i, n in enumerate(names):
            if n not in known:
                valid = tuple(CHIP_FIELDS if group == "chip" else EXPOSURE_FIELDS)
                hint = did_you_mean(n, [v for v in valid if v not in known])
                section = "chip_keywords" if group == "chip" else "keywords"
                c.fail(f"required.{group}[{i}]", f"'{n}' is required but has no rule in '{section}'{hint}",
                       expected=sorted(known), found=n)
        out[group] = names
    return out


def _filters(c: _Checker, value: Any) -> tuple[FilterDef, ...]:
    if not isinstance(value, list):
        c.fail("filters", "expected a list of {name, band, aliases}", found=value)
    out: list[FilterDef] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(value):
        d = c.mapping(item, f"filters[{i}]", ("name", "band", "aliases"))
        name = c.text(d.get("name"), f"filters[{i}].name")
        aliases = c.texts(d["aliases"], f"filters[{i}].aliases") if "aliases" in d else ()
        for spelling in (name, *aliases):
            token = norm_token(spelling)
            if token in seen and seen[token] != name:
                c.fail(f"filters[{i}]", f"{spelling!r} is already a spelling of filter {seen[token]!r}",
                       found=spelling)
            seen[token] = name
        band = c.text(d["band"], f"filters[{i}].band") if "band" in d else None
        out.append(FilterDef(name=name, band=band, aliases=aliases))
    return tuple(out)
