"""Collecting the problems of one file, so that a person sees all of them in one error."""

from __future__ import annotations

from collections.abc import Sequence

from wisp.errors import InvalidInput


def hdu_label(filename: str, hdu: int, extname: str | None = None) -> str:
    """``name.fits HDU 3 (CCD2)``."""
    return f"{filename} HDU {hdu}" + (f" ({extname})" if extname else "")


class Problems:
    """Errors (raised together at the end), notes (assumed defaults, ignored values) and the source of
    every resolved field, for one file."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.errors: list[InvalidInput] = []
        self.notes: list[str] = []
        self.sources: dict[str, str] = {}

    def missing(self, field: str, human: str, keys: Sequence[str], hdu: int, extname: str | None = None,
                *, also: str = "") -> None:
        """A required value with none of its keywords present (``header.missing_keyword``)."""
        looked = ", ".join(keys) if keys else "no keywords configured"
        self.errors.append(InvalidInput(
            f"{hdu_label(self.filename, hdu, extname)}: no {human} keyword (looked for {looked}{also})",
            code="header.missing_keyword", file=self.filename, hdu=hdu, extname=extname, field=field,
            keyword=list(keys), expected=f"one of {', '.join(keys)}" if keys else None, found=None))

    def bad(self, field: str, human: str, key: str, value: object, expected: str, hdu: int,
            extname: str | None = None, *, reason: str = "") -> None:
        """A value that is present but unusable (``header.bad_value``)."""
        why = f": {reason}" if reason else f" (expected {expected})"
        self.errors.append(InvalidInput(
            f"{hdu_label(self.filename, hdu, extname)}: {key}={value!r} is not a valid {human}{why}",
            code="header.bad_value", file=self.filename, hdu=hdu, extname=extname, field=field,
            keyword=key, expected=expected, found=_plain(value)))

    def fail(self, error: InvalidInput) -> None:
        self.errors.append(error)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def raise_if_any(self) -> None:
        """Raise the first error; the others are in ``details['other_problems']`` (and the message)."""
        if not self.errors:
            return
        first, rest = self.errors[0], self.errors[1:]
        if rest:
            first.details["other_problems"] = [e.to_dict() for e in rest]
            first.message += f" (and {len(rest)} more: " + "; ".join(e.message for e in rest) + ")"
            first.args = (first.message,)
        raise first


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)
