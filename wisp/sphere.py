"""Spherical helpers used everywhere: gnomonic (TAN) projection and great-circle distances, in degrees."""

from __future__ import annotations

import numpy as np


def tan_project(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) deg -> standard coordinates (xi towards east, eta towards north), deg, at (ra0, dec0)."""
    a, d = np.radians(ra), np.radians(dec)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cos_c
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(xi), np.degrees(eta)


def tan_deproject(xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Standard coordinates (deg) at (ra0, dec0) -> (ra, dec) deg with ra in [0, 360)."""
    x, y = np.radians(xi), np.radians(eta)
    a0, d0 = np.radians(ra0), np.radians(dec0)
    den = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, den)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def separation(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle distance (deg) from (ra0, dec0), accurate at all distances (Vincenty)."""
    a, d = np.radians(ra) - np.radians(ra0), np.radians(dec)
    d0 = np.radians(dec0)
    num = np.hypot(np.cos(d) * np.sin(a), np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a))
    den = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a)
    return np.degrees(np.arctan2(num, den))
