"""``PhantomConfig``: every parameter of one phantom study, and ``sample_config`` to draw a realistic one.

A config fully determines a study: ``generate_study(config)`` is a pure
function of it (its ``seed`` feeds the noise and texture generators), so the
same config always gives bit-identical pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stran.phantom.scenarios import (
    SCENARIOS,
    FatFocus,
    PathologyConfig,
    ScarBand,
    ScenarioParams,
    sample_pathology,
)
from stran.phantom.signal import PROFILE_NAMES, PROFILES, TISSUES

GENERATOR_VERSION = "1.1.0"


@dataclass
class AnatomyConfig:
    """ED geometry (mm, AHA degrees) of the LV, RV and the thorax around them."""

    r_endo: float = 25.0  # ED endocardial radius at the base
    cavity_length: float = 85.0  # ED base plane -> endocardial apex
    wall: float = 8.5  # ED wall thickness at the base
    apex_wall: float = 5.5  # endocardial apex -> epicardial apex
    shape_power: float = 2.5  # super-ellipsoid exponent (2 = ellipsoid, larger = blunter)
    ellipticity: float = 0.03
    ellipticity_angle: float = 0.0
    septal_wall_factor: float = 1.05
    trabeculation: float = 0.6  # amplitude (mm) of the ragged endocardial border
    rv_half_span: float = 60.0  # RV insertion points at 90 -/+ this
    rv_depth: float = 18.0  # RV crescent depth at the base
    rv_length: float = 0.8  # fraction of the cavity length the RV reaches
    rv_wall: float = 3.0
    rv_fullness: float = 0.65  # crescent profile exponent (< 1 = blunt)
    rv_skew: float = 0.15  # > 0: anterior part of the crescent deeper
    papillary_angles: list[float] = field(default_factory=lambda: [300.0, 215.0])
    papillary_radius: float = 4.5
    papillary_depths: list[float] = field(default_factory=lambda: [0.25, 0.78])  # fractions of cavity length
    epicardial_fat: float = 2.0  # mean thickness (mm)
    la_radius: float = 0.8  # LA radius / basal LV radius
    mediastinum_gap: float = 3.0
    mediastinum_signal: float = 0.8  # pericardial/mediastinal tissue around the heart, relative to myocardium
    body_half_axes: list[float] = field(default_factory=lambda: [160.0, 115.0])
    body_angle: float = 30.0  # degrees, body long axis vs the heart's lateral axis
    body_centre: list[float] = field(default_factory=lambda: [-35.0, 45.0])  # (lat, inf) mm from the LV axis
    subcutaneous_fat: float = 15.0
    chest_muscle: float = 12.0
    spine_centre: list[float] = field(default_factory=lambda: [-25.0, 95.0])
    spine_radius: float = 17.0
    aorta_centre: list[float] = field(default_factory=lambda: [0.0, 70.0])
    aorta_radius: float = 12.0
    liver_centre: list[float] = field(default_factory=lambda: [-75.0, 65.0])
    liver_radius: float = 80.0
    lung_vessels: int = 25

    @property
    def total_length(self) -> float:
        return self.cavity_length + self.apex_wall


@dataclass
class MotionConfig:
    radial_shortening: float = 0.35  # d0: normal endocardial radial shortening at ES
    longitudinal_shortening: float = 0.15
    base_descent: float = 12.0  # mm at ES
    twist_base: float = -3.0  # degrees at ES (anticlockwise seen from the apex)
    twist_apex: float = 10.0
    t_es_ms: float = 320.0  # R wave -> end-systole
    rapid_filling: float = 0.18
    diastasis_level: float = 0.22
    atrial_start: float = 0.80
    atrial_level: float = 0.12
    rv_shortening: float = 0.4  # fractional RV crescent depth change at ES
    translation: list[float] = field(default_factory=lambda: [1.5, -1.0])  # (lat, inf) mm at ES


@dataclass
class AcquisitionConfig:
    profile: str = "siemens-1.5T"
    vendor: str = "SIEMENS"
    model: str = "Aera"
    field_strength: float = 1.5
    sequence: str = "tfi2d1_25"
    rows: int = 144
    cols: int = 160
    pixel_spacing: float = 1.8  # mm, square pixels
    n_slices: int = 10
    slice_pitch: float = 10.0
    slice_thickness: float = 8.0
    basal_slice_depth: float = -2.0  # depth of the most basal slice (mm below the ED base plane)
    n_phases: int = 25
    rr_ms: float = 900.0
    rr_per_slice: list[float] = field(default_factory=list)  # each breath-hold's RR (ms); slice order = output order
    first_trigger_ms: float = 10.0
    flip_deg: float = 60.0
    tr_ms: float = 3.0
    te_ms: float = 1.5
    phase_resolution: float = 0.85
    apodization: float = 0.04
    snr: float = 25.0  # myocardial SNR (mean myocardial signal / noise sigma) at the heart
    shading: float = 0.3  # (max - min) / max of coil sensitivity across the FOV
    shading_waves: list[list[float]] = field(default_factory=list)
    gain: float = 120.0  # stored counts per unit myocardial signal
    banding_depth: float = 0.0  # 0 = no off-resonance bands
    banding_width: float = 0.04
    banding_waves: list[list[float]] = field(default_factory=list)
    banding_offset: float = 0.0
    banding_scale: float = 0.6  # cycles per unit field
    long_axis: list[float] = field(default_factory=lambda: [0.62, -0.52, -0.58])  # base -> apex, LPS unit
    inplane_rotation: float = 0.0  # degrees
    heart_offset: list[float] = field(default_factory=lambda: [10.0, -5.0])  # heart centre from FOV centre (mm, x/y)
    base_centre: list[float] = field(default_factory=lambda: [20.0, -10.0, 10.0])  # LV base centre (LPS mm)
    misregistration: list[list[float]] = field(default_factory=list)  # per slice (lat, inf) mm, output order
    depth_jitter: list[float] = field(default_factory=list)  # per slice through-plane breath-hold offset (mm)
    axis_tilt: float = 4.0  # degrees between the LV axis and the slice normal
    axis_tilt_direction: float = 0.0  # AHA degrees
    sub_planes: int = 3  # through-slice partial-volume samples


@dataclass
class PhantomConfig:
    """Every parameter of one phantom study."""

    seed: int = 0
    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)
    pathology: PathologyConfig = field(default_factory=PathologyConfig)
    tissues: dict[str, list[float]] = field(default_factory=dict)  # name -> [PD, T1, T2]; empty = field defaults
    texture: float = 0.04  # amplitude of smooth tissue texture
    version: str = GENERATOR_VERSION

    @property
    def scenario(self) -> str:
        return self.pathology.scenario

    @property
    def profile(self) -> str:
        return self.acquisition.profile

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhantomConfig:
        d = dict(d)
        pat = dict(d.get("pathology", {}))
        pat["bands"] = [ScarBand(**b) for b in pat.get("bands", [])]
        pat["fat_foci"] = [FatFocus(**f) for f in pat.get("fat_foci", [])]
        return cls(
            seed=int(d.get("seed", 0)),
            anatomy=AnatomyConfig(**d.get("anatomy", {})),
            motion=MotionConfig(**d.get("motion", {})),
            acquisition=AcquisitionConfig(**d.get("acquisition", {})),
            pathology=PathologyConfig(**pat),
            tissues={k: list(v) for k, v in d.get("tissues", {}).items()},
            texture=float(d.get("texture", 0.04)),
            version=str(d.get("version", GENERATOR_VERSION)),
        )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _perturb_direction(rng: np.random.Generator, v: np.ndarray, max_deg: float) -> np.ndarray:
    v = _unit(np.asarray(v, dtype=np.float64))
    axis = _unit(np.cross(v, rng.normal(size=3)))
    ang = np.deg2rad(rng.uniform(0, max_deg))
    return _unit(v * np.cos(ang) + np.cross(axis, v) * np.sin(ang))


def sample_config(
    seed: int,
    scenario: str | None = None,
    profile: str | None = None,
    *,
    params: ScenarioParams | None = None,
) -> PhantomConfig:
    """A random, realistic ``PhantomConfig`` for ``seed`` (scenario / scanner profile forced when given)."""
    seed = int(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x57A2]))
    u = rng.uniform
    if scenario is None:
        scenario = SCENARIOS[int(rng.integers(4))]
    if profile is None:
        profile = PROFILE_NAMES[int(rng.integers(len(PROFILE_NAMES)))]
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILE_NAMES}")
    prof = PROFILES[profile]

    # --- anatomy ---
    an = AnatomyConfig(
        r_endo=u(22.0, 28.0),
        cavity_length=u(76.0, 92.0),
        wall=u(7.0, 10.0),
        apex_wall=u(4.0, 6.5),
        shape_power=u(2.1, 3.0),
        ellipticity=u(0.0, 0.06),
        ellipticity_angle=u(0, 180),
        septal_wall_factor=u(1.0, 1.12),
        trabeculation=u(0.3, 1.0),
        rv_half_span=u(56.0, 64.0),
        rv_depth=u(13.0, 24.0),
        rv_length=u(0.70, 0.88),
        rv_wall=u(2.5, 4.0),
        rv_fullness=u(0.5, 0.8),
        rv_skew=u(-0.1, 0.35),
        papillary_angles=[u(285.0, 315.0), u(200.0, 230.0)],
        papillary_radius=u(3.5, 5.5),
        papillary_depths=[u(0.2, 0.32), u(0.68, 0.82)],
        epicardial_fat=u(0.3, 2.0),
        la_radius=u(0.7, 0.9),
        mediastinum_gap=u(1.0, 5.0),
        mediastinum_signal=u(0.4, 1.4),
        body_half_axes=[u(140.0, 180.0), u(100.0, 130.0)],
        body_angle=u(15.0, 50.0),
        subcutaneous_fat=u(6.0, 25.0),
        chest_muscle=u(8.0, 18.0),
        spine_radius=u(15.0, 20.0),
        aorta_radius=u(10.0, 14.0),
        liver_radius=u(65.0, 95.0),
        lung_vessels=int(rng.integers(10, 40)),
    )
    # thorax placed around the heart: the chest wall's inner surface just anterior to the RV
    heart_reach = an.r_endo + an.wall + an.rv_depth + an.rv_wall + an.epicardial_fat + 2.0
    a_ax, b_ax = an.body_half_axes
    inner_ant = heart_reach + u(1.0, 10.0)
    lat_c = -u(20.0, 50.0)
    an.body_centre = [lat_c, -(inner_ant + an.subcutaneous_fat + an.chest_muscle) + b_ax]
    an.spine_centre = [
        lat_c + u(-10.0, 15.0),
        an.body_centre[1] + b_ax - an.subcutaneous_fat - an.chest_muscle - an.spine_radius - u(5.0, 20.0),
    ]
    an.aorta_centre = [
        an.spine_centre[0] + u(15.0, 30.0),
        an.spine_centre[1] - an.spine_radius - an.aorta_radius - u(0.0, 6.0),
    ]
    an.liver_centre = [-u(55.0, 90.0), u(50.0, 85.0)]

    # --- motion ---
    mo = MotionConfig(
        radial_shortening=u(0.32, 0.37),
        longitudinal_shortening=0.15,
        base_descent=u(10.0, 15.0),
        twist_base=u(-4.0, -2.0),
        twist_apex=u(8.0, 12.0),
        t_es_ms=u(290.0, 340.0),
        rapid_filling=u(0.15, 0.22),
        diastasis_level=u(0.15, 0.3),
        atrial_start=u(0.76, 0.84),
        atrial_level=u(0.08, 0.16),
        rv_shortening=u(0.3, 0.5),
        translation=[u(-3.0, 3.0), u(-3.0, 3.0)],
    )

    # --- acquisition ---
    fov = u(270.0, 370.0)
    spacing = u(1.4, 2.2)
    cols = int(np.clip(round(fov / spacing / 16.0) * 16, 128, 192))
    spacing = round(float(np.clip(fov / cols, 1.4, 2.2)), 4)  # short decimals: clean DICOM DS values
    rows = int(np.clip(round(cols * u(0.75, 1.0) / 8.0) * 8, 128, cols))
    pitch = round(u(8.0, 10.0), 2)
    thickness = min(pitch, round(u(6.0, 8.0), 2))
    basal = u(-8.0, 3.0)
    n_slices = int(np.clip(round((an.total_length - basal + u(-6.0, 10.0)) / pitch) + 1, 8, 14))
    phases = int(rng.choice(prof.phases)) if rng.random() < 0.7 else int(rng.integers(20, 31))
    rr = u(750.0, 1000.0)
    rr_slices = [float(np.rint(rr * (1.0 + v))) for v in rng.uniform(-0.05, 0.05, n_slices)]
    breath_holds = int(rng.integers(1, 4))  # slices per breath-hold
    # breath-hold misregistration: each breath-hold (1-3 slices) its own in-plane heart offset of
    # 0.5-2.5 mm in a random direction (so neighbouring breath-holds differ by ~1-5 mm) and a
    # through-plane offset of up to 1.5 mm
    mis: list[list[float]] = []
    depth_jitter: list[float] = []
    cur, dz = [0.0, 0.0], 0.0
    for s in range(n_slices):
        if s % breath_holds == 0:
            ang = u(0, 2 * np.pi)
            mag = u(1.0, 5.0) / 2.0
            cur = [mag * np.cos(ang), mag * np.sin(ang)]
            dz = u(-1.5, 1.5)
        mis.append([float(cur[0]), float(cur[1])])
        depth_jitter.append(float(dz))
    mis_arr = np.asarray(mis) - np.mean(mis, axis=0)
    axis = _perturb_direction(rng, np.array([0.62, -0.52, -0.58]), 15.0)
    banding = rng.random() < prof.banding_probability
    from stran.phantom.signal import random_wave_params

    acq = AcquisitionConfig(
        profile=profile,
        vendor=prof.vendor,
        model=prof.model,
        field_strength=prof.field_strength,
        sequence=prof.sequence,
        rows=rows,
        cols=cols,
        pixel_spacing=spacing,
        n_slices=n_slices,
        slice_pitch=pitch,
        slice_thickness=thickness,
        basal_slice_depth=basal,
        n_phases=phases,
        rr_ms=float(np.rint(rr)),
        rr_per_slice=rr_slices,
        first_trigger_ms=u(0.0, 0.8) * min(rr_slices) / phases,
        flip_deg=u(*prof.flip_deg),
        tr_ms=u(*prof.tr_ms),
        te_ms=0.0,
        phase_resolution=u(*prof.phase_resolution),
        apodization=u(*prof.apodization),
        snr=u(*prof.snr),
        shading=u(*prof.shading),
        shading_waves=random_wave_params(rng, 3, (350.0, 900.0)),
        gain=u(*prof.gain),
        banding_depth=u(0.5, 0.9) if banding else 0.0,
        banding_width=u(0.03, 0.06),
        banding_waves=random_wave_params(rng, 2, (150.0, 400.0)),
        banding_offset=u(0.0, 1.0),
        banding_scale=u(0.4, 0.9),
        long_axis=[float(v) for v in axis],
        inplane_rotation=u(-40.0, 40.0),
        heart_offset=[u(-0.1, 0.1) * cols * spacing, u(-0.1, 0.1) * rows * spacing],
        base_centre=[u(-10.0, 40.0), u(-30.0, 10.0), u(-20.0, 40.0)],
        misregistration=[[float(a), float(b)] for a, b in mis_arr],
        depth_jitter=depth_jitter,
        axis_tilt=u(0.0, 8.0),
        axis_tilt_direction=u(0.0, 360.0),
    )
    acq.te_ms = acq.tr_ms / 2.0

    # --- tissues: field-strength values with +-5 % per-study spread ---
    tissues = {}
    for name, (pd, t1, t2) in TISSUES[prof.field_strength].items():
        tissues[name] = [float(pd * u(0.97, 1.03)), float(t1 * u(0.95, 1.05)), float(t2 * u(0.95, 1.05))]

    pathology = sample_pathology(rng, scenario, rv_half_span=an.rv_half_span, wall_mm=an.wall, params=params)
    return PhantomConfig(
        seed=seed,
        anatomy=an,
        motion=mo,
        acquisition=acq,
        pathology=pathology,
        tissues=tissues,
        texture=u(0.02, 0.05),
    )
