"""Cardiac motion: volume curve, regional radial motion with incompressibility, twist, base descent.

Recipe from cine-data-notes section 1.4: the endocardial radius is
``r_endo(t) = r_endo_ed (1 - d0 g)`` with ``g = f c(t)`` (f the regional
fraction of normal motion, c the 0..1 contraction curve, d0 ~ 0.35), and the
epicardium conserves the wall's sector area under longitudinal shortening
``Ls = 0.15 max(g, 0)``: ``r_epi(t)^2 = r_endo(t)^2 + (r_epi_ed^2 - r_endo_ed^2) / (1 - Ls)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CycleShape:
    """Shape of the contraction curve c(p) over one RR interval (p = phase fraction, 0 = R wave = ED)."""

    p_es: float = 0.36  # end-systole
    rapid_filling: float = 0.18  # duration of rapid filling (fraction of RR)
    diastasis_level: float = 0.22  # c left after rapid filling
    atrial_start: float = 0.80  # start of the atrial kick
    atrial_level: float = 0.12  # c just before the atrial kick
    end: float = 0.96  # ED reached again


def _cos_ramp(x: np.ndarray) -> np.ndarray:
    """0 -> 1 smooth ramp on [0, 1]."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0.0, 1.0))


def contraction(p: np.ndarray | float, shape: CycleShape) -> np.ndarray:
    """Contraction c(p) in [0, 1]: 0 at ED, 1 at ES; periodic in p."""
    p = np.mod(np.asarray(p, dtype=np.float64), 1.0)
    s = shape
    rf_end = min(s.p_es + s.rapid_filling, s.atrial_start - 0.02)
    out = np.zeros_like(p)
    sys = p < s.p_es
    out[sys] = _cos_ramp(p[sys] / s.p_es)
    rf = (p >= s.p_es) & (p < rf_end)
    out[rf] = 1.0 - (1.0 - s.diastasis_level) * _cos_ramp((p[rf] - s.p_es) / (rf_end - s.p_es))
    dia = (p >= rf_end) & (p < s.atrial_start)
    x = (p[dia] - rf_end) / max(s.atrial_start - rf_end, 1e-6)
    out[dia] = s.diastasis_level + (s.atrial_level - s.diastasis_level) * x
    kick = (p >= s.atrial_start) & (p < s.end)
    out[kick] = s.atrial_level * (1.0 - _cos_ramp((p[kick] - s.atrial_start) / (s.end - s.atrial_start)))
    return out


def septal_flash(p: np.ndarray | float) -> np.ndarray:
    """Early-systolic septal flash (LBBB): a brief inward-outward bump around 6 % of RR."""
    p = np.mod(np.asarray(p, dtype=np.float64), 1.0)
    return np.exp(-(((p - 0.06) / 0.035) ** 2))


def regional_drive(p: np.ndarray, f: np.ndarray, delay: np.ndarray, flash: np.ndarray, shape: CycleShape) -> np.ndarray:
    """g = f c(p - delay) + flash(p) for phases ``p`` (T,) and angle tables (T, A) or (A,)."""
    p = np.asarray(p, dtype=np.float64)[:, None]
    return f * contraction(p - delay, shape) + flash * septal_flash(p)


def wall_radii(
    r_endo_ed: np.ndarray,
    r_epi_ed: np.ndarray,
    g: np.ndarray,
    radial_shortening: float,
    longitudinal_shortening: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Endo- and epicardial radii after motion ``g`` (incompressible wall)."""
    r_endo = r_endo_ed * (1.0 - radial_shortening * g)
    ls = longitudinal_shortening * np.maximum(g, 0.0)
    area = np.maximum(r_epi_ed**2 - r_endo_ed**2, 0.0)
    r_epi = np.sqrt(r_endo**2 + area / (1.0 - ls))
    return r_endo, r_epi


def material_depth(plane_depth: float, c: np.ndarray, base_descent: float, total_length: float) -> np.ndarray:
    """ED depth of the tissue found in a fixed plane at contraction ``c``.

    The base descends ``base_descent`` mm at ES, the apex stays put:
    ``z = z0 + D (1 - z0 / L) c`` solved for ``z0``.
    """
    dc = base_descent * np.asarray(c, dtype=np.float64)
    return (plane_depth - dc) / (1.0 - dc / total_length)


def twist_deg(depth0: np.ndarray, c: np.ndarray, base_deg: float, apex_deg: float, total_length: float) -> np.ndarray:
    """Rotation (degrees, anticlockwise seen from the apex) of tissue at ED depth ``depth0``."""
    u = np.clip(np.asarray(depth0, dtype=np.float64) / total_length, 0.0, 1.0)
    return np.asarray(c, dtype=np.float64) * (base_deg + (apex_deg - base_deg) * u)
