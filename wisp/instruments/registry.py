"""The set of known instrument descriptions, and identifying which one a file belongs to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from wisp.errors import ConfigError, InvalidInput
from wisp.fitsio.layout import FitsLayout
from wisp.instruments.loader import load_description
from wisp.instruments.normalise import exposure_headers
from wisp.instruments.schema import InstrumentDescription
from wisp.instruments.values import find

BUNDLED_DIR = Path(__file__).resolve().parent / "data"


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if path.is_file():
        return [path]
    raise ConfigError(f"instrument path {path} does not exist (set by WISP_INSTRUMENT_PATH?)",
                      file=str(path), variable="WISP_INSTRUMENT_PATH")


def load_registry(extra_paths: Sequence[Path] = ()) -> InstrumentRegistry:
    """Load and validate the bundled descriptions and those in ``extra_paths`` (directories of
    ``*.yaml``/``*.yml`` files, or single files).

    A user description with the same ``name`` as a bundled one replaces it (listed in
    :attr:`InstrumentRegistry.replaced`); two user files with the same name are a :class:`ConfigError`.
    The result is immutable; callers cache it.
    """
    found: dict[str, InstrumentDescription] = {}
    for f in _files(BUNDLED_DIR):
        desc = load_description(f)
        if desc.name in found:
            raise ConfigError(f"two bundled instrument descriptions are named {desc.name!r}: "
                              f"{found[desc.name].source} and {f}", file=str(f), field="name")
        found[desc.name] = desc
    bundled = set(found)
    user: dict[str, Path] = {}
    replaced: list[str] = []
    for path in extra_paths:
        for f in _files(Path(path).expanduser()):
            desc = load_description(f)
            if desc.name in user:
                raise ConfigError(f"two instrument descriptions are named {desc.name!r}: {user[desc.name]} "
                                  f"and {f}; rename one", file=str(f), field="name", found=desc.name)
            if desc.name in bundled:
                replaced.append(desc.name)
            user[desc.name] = f
            found[desc.name] = desc
    return InstrumentRegistry(found, replaced=replaced)


class InstrumentRegistry:
    """Known descriptions by name; :meth:`identify` picks the one a file belongs to."""

    def __init__(self, descriptions: Mapping[str, InstrumentDescription],
                 replaced: Sequence[str] = ()) -> None:
        self._descriptions = dict(sorted(descriptions.items()))
        self.replaced = tuple(replaced)

    @property
    def descriptions(self) -> dict[str, InstrumentDescription]:
        """All descriptions, by name."""
        return dict(self._descriptions)

    def get(self, name: str) -> InstrumentDescription:
        """The description called ``name`` (KeyError if unknown)."""
        return self._descriptions[name]

    def matching(self, layout: FitsLayout) -> list[InstrumentDescription]:
        """Every description whose ``match`` keywords and ``image_hdus`` condition hold for the file,
        highest priority first."""
        headers = exposure_headers(layout)
        n_images = len(layout.image_hdus())
        out = []
        for desc in self._descriptions.values():
            if desc.image_hdus is not None and not desc.image_hdus[0] <= n_images <= desc.image_hdus[1]:
                continue
            ok = True
            for key, accepted in desc.match.items():
                f = find(headers, (key,))
                if f is None or not any(v.accepts(str(f.value)) for v in accepted):
                    ok = False
                    break
            if ok:
                out.append(desc)
        return sorted(out, key=lambda d: (-d.priority, d.name))

    def identify(self, layout: FitsLayout, filename: str) -> InstrumentDescription:
        """The description of the camera that wrote the file.

        Raises ``fits.no_image`` (no 2-D image HDU at all), ``instrument.unknown`` (no description
        matches; the message gives the file's INSTRUME/TELESCOP/number of images and the known
        descriptions) or ``instrument.ambiguous`` (several match with the same top priority).
        """
        images = layout.image_hdus()
        if not images:
            kinds = ", ".join(f"{h.label()}: {h.kind}" + (f" {'x'.join(map(str, reversed(h.shape)))}"
                                                          if h.shape else "") for h in layout.hdus)
            raise InvalidInput(f"{filename}: no 2-D image HDU ({kinds})", code="fits.no_image", file=filename,
                               expected="an HDU with a 2-D image", found=kinds)
        candidates = self.matching(layout)
        if not candidates:
            headers = exposure_headers(layout)
            seen = {k: (str(f.value) if (f := find(headers, (k,))) else None)
                    for k in ("INSTRUME", "TELESCOP")}
            shown = ", ".join(f"{k}={v!r}" if v is not None else f"no {k}" for k, v in seen.items())
            known = "; ".join(d.summary() for d in self._descriptions.values())
            raise InvalidInput(
                f"{filename}: no instrument description matches this file ({shown}, {len(images)} image "
                f"HDU{'s' if len(images) != 1 else ''}); known: {known}. Describe the camera in a YAML file "
                "(see docs/instruments.md) and add its directory to WISP_INSTRUMENT_PATH",
                code="instrument.unknown", file=filename, hdu=0,
                found={**seen, "image_hdus": len(images)}, expected=sorted(self._descriptions))
        top = [d for d in candidates if d.priority == candidates[0].priority]
        if len(top) > 1:
            raise InvalidInput(
                f"{filename}: several instrument descriptions match with priority {top[0].priority}: "
                + ", ".join(f"{d.name} ({d.source})" for d in top)
                + "; make one more specific or give it a higher priority",
                code="instrument.ambiguous", file=filename, found=[d.name for d in top])
        return top[0]
