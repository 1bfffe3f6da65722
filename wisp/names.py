"""Checking names given by users (parameters, schema fields) with "did you mean" hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from wisp.errors import InvalidInput


def did_you_mean(name: str, allowed: Sequence[str], *, list_if_none: bool = False) -> str:
    """`` (did you mean 'x'?)`` for the closest allowed name, else '' (or the allowed names)."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (allowed: {', '.join(allowed)})" if list_if_none else ""


def reject_unknown(names: Iterable[str], allowed: Sequence[str], *, what: str, code: str) -> None:
    """Raise :class:`InvalidInput` for the first name not in ``allowed``, with a hint."""
    for name in names:
        if name not in allowed:
            raise InvalidInput(f"unknown {what} '{name}'{did_you_mean(name, allowed)}", code=code, parameter=name)
