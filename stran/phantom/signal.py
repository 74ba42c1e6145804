"""bSSFP contrast, scanner profiles and the acquisition chain (shading, banding, PSF, Rician noise).

Tissue values follow cine-data-notes section 1.3 (MRXCAT-2 / literature
relaxation times); the on-resonance bSSFP magnitude is
``S = PD sin(a) exp(-TE/T2) / ((T1/T2 + 1) - cos(a) (T1/T2 - 1))``.
With TR 3 ms, TE 1.5 ms this gives blood/myocardium ~3.0 at 1.5 T (flip 60)
and ~3.6 at 3 T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# (PD, T1 ms, T2 ms) per tissue and field strength.
TISSUES: dict[float, dict[str, tuple[float, float, float]]] = {
    1.5: {
        "blood": (0.95, 1550.0, 250.0),
        "myocardium": (0.80, 1000.0, 50.0),
        "fat": (0.90, 280.0, 80.0),
        "liver": (0.85, 600.0, 45.0),
        "muscle": (0.78, 900.0, 35.0),
        "lung": (0.12, 1200.0, 40.0),
        "marrow": (0.75, 400.0, 70.0),
    },
    3.0: {
        "blood": (0.95, 1950.0, 275.0),
        "myocardium": (0.80, 1200.0, 45.0),
        "fat": (0.90, 370.0, 70.0),
        "liver": (0.85, 810.0, 35.0),
        "muscle": (0.78, 1400.0, 30.0),
        "lung": (0.12, 1400.0, 30.0),
        "marrow": (0.75, 500.0, 60.0),
    },
}


def bssfp(pd: float, t1: float, t2: float, flip_deg: float, te_ms: float) -> float:
    """On-resonance balanced SSFP steady-state magnitude (closed form, MRXCAT convention)."""
    a = np.deg2rad(flip_deg)
    r = t1 / t2
    return float(pd * np.sin(a) * np.exp(-te_ms / t2) / ((r + 1.0) - np.cos(a) * (r - 1.0)))


def tissue_signals(tissues: dict[str, tuple[float, float, float]], flip_deg: float, te_ms: float) -> dict[str, float]:
    """Signal of every tissue relative to myocardium (myocardium = 1)."""
    raw = {name: bssfp(pd, t1, t2, flip_deg, te_ms) for name, (pd, t1, t2) in tissues.items()}
    ref = raw["myocardium"]
    return {name: v / ref for name, v in raw.items()}


# --- scanner profiles --------------------------------------------------------


@dataclass(frozen=True)
class ScannerProfile:
    """What a vendor x field strength changes: names, intensity scale, noise, shading, filters, phases."""

    name: str
    vendor: str  # DICOM Manufacturer
    model: str  # ManufacturerModelName
    field_strength: float
    sequence: str
    gain: tuple[float, float]  # stored counts per unit myocardial signal (uniform range)
    snr: tuple[float, float]  # myocardial SNR range
    shading: tuple[float, float]  # (max - min) / max of the coil shading across the FOV
    flip_deg: tuple[float, float]
    tr_ms: tuple[float, float]
    phase_resolution: tuple[float, float]  # fraction of k-space lines acquired in the phase direction
    apodization: tuple[float, float]  # Fermi filter edge width (fraction of k_max)
    phases: tuple[int, ...]  # typical numbers of reconstructed phases
    banding_probability: float


# fmt: off
PROFILES: dict[str, ScannerProfile] = {
    p.name: p
    for p in (
        ScannerProfile(
            "siemens-1.5T", "SIEMENS", "Aera", 1.5, "tfi2d1_25",
            gain=(70.0, 180.0), snr=(18.0, 40.0), shading=(0.20, 0.35), flip_deg=(55.0, 70.0), tr_ms=(2.8, 3.3),
            phase_resolution=(0.75, 1.0), apodization=(0.02, 0.05), phases=(25, 25, 30, 20, 28),
            banding_probability=0.08,
        ),
        ScannerProfile(
            "siemens-3T", "SIEMENS", "Skyra", 3.0, "tfi2d1_25",
            gain=(90.0, 220.0), snr=(22.0, 40.0), shading=(0.28, 0.45), flip_deg=(48.0, 62.0), tr_ms=(2.7, 3.2),
            phase_resolution=(0.75, 1.0), apodization=(0.02, 0.05), phases=(25, 25, 30, 20, 28),
            banding_probability=0.30,
        ),
        ScannerProfile(
            "ge-1.5T", "GE MEDICAL SYSTEMS", "SIGNA Artist", 1.5, "FIESTA",
            gain=(200.0, 700.0), snr=(15.0, 35.0), shading=(0.25, 0.45), flip_deg=(50.0, 65.0), tr_ms=(3.0, 3.6),
            phase_resolution=(0.70, 0.95), apodization=(0.03, 0.07), phases=(20, 20, 24, 30, 30),
            banding_probability=0.10,
        ),
        ScannerProfile(
            "ge-3T", "GE MEDICAL SYSTEMS", "Discovery MR750", 3.0, "FIESTA",
            gain=(240.0, 800.0), snr=(20.0, 38.0), shading=(0.32, 0.50), flip_deg=(45.0, 60.0), tr_ms=(2.9, 3.5),
            phase_resolution=(0.70, 0.95), apodization=(0.03, 0.07), phases=(20, 20, 24, 30, 30),
            banding_probability=0.35,
        ),
        ScannerProfile(
            "philips-1.5T", "Philips Medical Systems", "Ingenia", 1.5, "B-TFE",
            gain=(35.0, 120.0), snr=(16.0, 36.0), shading=(0.22, 0.40), flip_deg=(55.0, 70.0), tr_ms=(2.8, 3.4),
            phase_resolution=(0.70, 0.90), apodization=(0.04, 0.08), phases=(30, 30, 25, 24, 28),
            banding_probability=0.10,
        ),
        ScannerProfile(
            "philips-3T", "Philips Medical Systems", "Ingenia 3.0T", 3.0, "B-TFE",
            gain=(45.0, 150.0), snr=(20.0, 40.0), shading=(0.30, 0.50), flip_deg=(45.0, 60.0), tr_ms=(2.7, 3.3),
            phase_resolution=(0.70, 0.90), apodization=(0.04, 0.08), phases=(30, 30, 25, 24, 28),
            banding_probability=0.30,
        ),
    )
}
# fmt: on
PROFILE_NAMES = tuple(PROFILES)


# --- smooth random fields ----------------------------------------------------


def cosine_field(positions: np.ndarray, params: list[list[float]]) -> np.ndarray:
    """Sum of plane waves ``a cos(2 pi k.x / lambda + phase)`` at ``positions`` (..., 3) mm.

    ``params`` rows are (amplitude, kx, ky, kz, wavelength_mm, phase_rad) with unit (kx, ky, kz).
    """
    out = np.zeros(positions.shape[:-1], dtype=np.float64)
    for amp, kx, ky, kz, lam, ph in params:
        proj = positions[..., 0] * kx + positions[..., 1] * ky + positions[..., 2] * kz
        out += amp * np.cos(2.0 * np.pi * proj / lam + ph)
    return out


def random_wave_params(rng: np.random.Generator, n: int, wavelength: tuple[float, float]) -> list[list[float]]:
    rows = []
    for _ in range(n):
        k = rng.normal(size=3)
        k /= np.linalg.norm(k)
        rows.append(
            [
                float(rng.uniform(0.5, 1.0)),
                *map(float, k),
                float(rng.uniform(*wavelength)),
                float(rng.uniform(0, 2 * np.pi)),
            ]
        )
    return rows


def shading_from_field(field: np.ndarray, variation: float) -> np.ndarray:
    """Multiplicative coil shading with (max - min) / max == ``variation`` over ``field``'s extent."""
    lo, hi = float(field.min()), float(field.max())
    norm = (field - lo) / max(hi - lo, 1e-9) - 0.5  # [-0.5, 0.5]
    k = -np.log(max(1.0 - variation, 1e-3))
    return np.exp(k * norm)


def banding_attenuation(cycles: np.ndarray, depth: float, width: float) -> np.ndarray:
    """bSSFP off-resonance dark bands where the phase per TR crosses pi (``cycles`` = off-resonance x TR)."""
    d = np.mod(cycles, 1.0) - 0.5
    return 1.0 - depth * np.exp(-((d / width) ** 2))


# --- acquisition chain ---------------------------------------------------------


def kspace_window(rows: int, cols: int, phase_resolution: float, apodization: float) -> np.ndarray:
    """Separable Fermi window (rows = phase encoding, truncated; columns = readout), FFT order, float32."""

    def fermi(n: int, cutoff: float) -> np.ndarray:
        k = np.abs(np.fft.fftfreq(n)) * 2.0  # |k| / k_max in [0, 1]
        w = max(apodization, 1e-3)
        return 1.0 / (1.0 + np.exp((k - cutoff) / w))

    return (fermi(rows, phase_resolution)[:, None] * fermi(cols, 1.0)[None, :]).astype(np.float32)


def acquire(signal: np.ndarray, window: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude image of ``signal`` (T, H, W) seen through ``window`` with complex Gaussian noise.

    The noise is added before the k-space filter, so it is correlated like a
    zero-filled, filtered reconstruction; ``sigma`` is its standard deviation
    per channel in the final image (the Rician magnitude's Gaussian sigma).
    """
    from scipy import fft

    w2 = float(np.mean(window.astype(np.float64) ** 2))
    sigma0 = np.float32(sigma / np.sqrt(max(w2, 1e-9)))
    img = np.empty(signal.shape, dtype=np.complex64)
    img.real = rng.standard_normal(signal.shape, dtype=np.float32)
    img.imag = rng.standard_normal(signal.shape, dtype=np.float32)
    img *= sigma0
    img.real += signal
    k = fft.fft2(img, axes=(-2, -1), workers=1, overwrite_x=True)
    k *= window
    out = fft.ifft2(k, axes=(-2, -1), workers=1, overwrite_x=True)
    return np.abs(out).astype(np.float32)
