"""``generate_study(config) -> PhantomStudy``: one synthetic SAX bSSFP cine study with its ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stran.io.study import Acquisition, CineStudy
from stran.phantom.anatomy import level_of_depth
from stran.phantom.config import GENERATOR_VERSION, PhantomConfig
from stran.phantom.motion import CycleShape
from stran.phantom.render import LABEL_SCAR, SliceGeometry, render_background, render_heart_slice, smooth_texture
from stran.phantom.signal import (
    TISSUES,
    acquire,
    banding_attenuation,
    cosine_field,
    kspace_window,
    shading_from_field,
    tissue_signals,
)
from stran.phantom.tables import build_tables
from stran.phantom.truth import GroundTruth, segment_table, volumes

MAX_VALUE = 65535.0


@dataclass
class PhantomStudy:
    cine: CineStudy
    truth: GroundTruth
    config: PhantomConfig

    @property
    def image_id(self) -> str:
        return self.cine.patient_id


def patient_id_for(seed: int) -> str:
    return f"PHANTOM-{int(seed):06d}"


def _uid(*parts: object) -> str:
    """Deterministic UID from ``parts`` (pydicom concatenates entropy sources, so join them unambiguously)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["|".join(["stran-phantom", *[str(p) for p in parts]])]))


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def heart_axes(cfg: PhantomConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x_dir, y_dir, apex_dir) in LPS: image column and row directions and the base->apex LV axis.

    The image is the standard SAX view seen from the apex (RV on the left,
    anterior up before the in-plane rotation), so ``cross(x_dir, y_dir)``
    points from apex to base and slices are ordered apex (index 0) -> base.
    """
    a = _unit(cfg.acquisition.long_axis)
    ant = np.array([0.0, -1.0, 0.0])
    y0 = -_unit(ant - np.dot(ant, a) * a)  # inferior, in plane
    x0 = np.cross(y0, -a)  # lateral
    g = np.deg2rad(cfg.acquisition.inplane_rotation)
    x_dir = np.cos(g) * x0 + np.sin(g) * y0
    y_dir = -np.sin(g) * x0 + np.cos(g) * y0
    return x_dir, y_dir, a


def slice_depths(cfg: PhantomConfig) -> np.ndarray:
    """Nominal plane depth (mm from the ED base) of each output slice (index 0 = most apical)."""
    acq = cfg.acquisition
    n = acq.n_slices
    return acq.basal_slice_depth + (n - 1 - np.arange(n)) * acq.slice_pitch


def study_affine(cfg: PhantomConfig) -> np.ndarray:
    acq = cfg.acquisition
    x_dir, y_dir, a = heart_axes(cfg)
    sp = acq.pixel_spacing
    depths = slice_depths(cfg)
    centre0 = np.asarray(acq.base_centre, dtype=np.float64) + depths[0] * a
    off_u, off_v = acq.heart_offset
    origin = (
        centre0 - off_u * x_dir - off_v * y_dir - 0.5 * (acq.cols - 1) * sp * x_dir - 0.5 * (acq.rows - 1) * sp * y_dir
    )
    affine = np.eye(4)
    affine[:3, 0] = x_dir * sp
    affine[:3, 1] = y_dir * sp
    affine[:3, 2] = -acq.slice_pitch * a
    affine[:3, 3] = origin
    return affine


def pixel_heart_frame(cfg: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lat, inf) mm of every pixel relative to the LV axis (same for all slices).

    ``lat`` points to the lateral wall, ``inf`` to the inferior wall, so the AHA
    angle of a pixel around a centre (cl, ci) is ``atan2(-(lat - cl), -(inf - ci))``.
    """
    acq = cfg.acquisition
    sp = acq.pixel_spacing
    jj, ii = np.mgrid[0 : acq.rows, 0 : acq.cols].astype(np.float64)
    u = (ii - 0.5 * (acq.cols - 1)) * sp - acq.heart_offset[0]
    v = (jj - 0.5 * (acq.rows - 1)) * sp - acq.heart_offset[1]
    g = np.deg2rad(acq.inplane_rotation)
    lat = u * np.cos(g) - v * np.sin(g)
    inf = u * np.sin(g) + v * np.cos(g)
    return lat, inf


def _cycle_shape(cfg: PhantomConfig, rr: float) -> CycleShape:
    mo = cfg.motion
    p_es = float(np.clip(mo.t_es_ms / rr, 0.25, 0.5))
    return CycleShape(
        p_es=p_es,
        rapid_filling=mo.rapid_filling,
        diastasis_level=mo.diastasis_level,
        atrial_start=max(mo.atrial_start, p_es + mo.rapid_filling + 0.05),
        atrial_level=mo.atrial_level,
        end=0.96,
    )


def tissue_table(cfg: PhantomConfig) -> dict[str, float]:
    tissues = cfg.tissues or {k: list(v) for k, v in TISSUES[cfg.acquisition.field_strength].items()}
    sig = tissue_signals({k: tuple(v) for k, v in tissues.items()}, cfg.acquisition.flip_deg, cfg.acquisition.te_ms)
    sig["mediastinum"] = cfg.anatomy.mediastinum_signal
    return sig


def generate_study(config: PhantomConfig) -> PhantomStudy:
    """Render the study a config describes (deterministic: same config -> bit-identical pixels)."""
    cfg = config
    acq = cfg.acquisition
    seed = int(cfg.seed)
    n_s, n_t = acq.n_slices, acq.n_phases
    sp = acq.pixel_spacing

    tab = build_tables(cfg, np.random.default_rng(np.random.SeedSequence([seed, 2])))
    sig = tissue_table(cfg)
    lat, inf = pixel_heart_frame(cfg)
    depths = slice_depths(cfg)
    affine = study_affine(cfg)

    for name in ("rr_per_slice", "misregistration", "depth_jitter"):
        values = getattr(acq, name)
        if values and len(values) != n_s:
            raise ValueError(f"acquisition.{name} has {len(values)} entries for {n_s} slices")
    if not (acq.n_slices >= 1 and acq.n_phases >= 2 and acq.rows >= 16 and acq.cols >= 16):
        raise ValueError(f"need >= 1 slice, >= 2 phases and >= 16x16 pixels, got {n_s}x{n_t}x{acq.rows}x{acq.cols}")
    rr = np.asarray(acq.rr_per_slice if acq.rr_per_slice else [acq.rr_ms] * n_s, dtype=np.float64)
    trig = np.round(acq.first_trigger_ms + np.arange(n_t)[None, :] * rr[:, None] / n_t, 2)
    mis = np.asarray(acq.misregistration if acq.misregistration else [[0.0, 0.0]] * n_s, dtype=np.float64)
    djit = np.asarray(acq.depth_jitter if acq.depth_jitter else [0.0] * n_s, dtype=np.float64)

    # coil shading and off-resonance fields in patient coordinates (smooth across slices)
    jj, ii = np.mgrid[0 : acq.rows, 0 : acq.cols].astype(np.float64)
    pos = np.stack(
        [
            affine[:3, 3][None, None, :]
            + ii[..., None] * affine[:3, 0]
            + jj[..., None] * affine[:3, 1]
            + s * affine[:3, 2]
            for s in range(n_s)
        ]
    )  # (S, H, W, 3)
    field = cosine_field(pos, acq.shading_waves) if acq.shading_waves else np.zeros(pos.shape[:-1])
    shading = shading_from_field(field, acq.shading) if acq.shading_waves else np.ones(pos.shape[:-1])
    # reference: the heart centre in the middle slice gets sensitivity 1 (SNR is defined there)
    mid = n_s // 2
    hc = np.unravel_index(np.argmin(lat**2 + inf**2), lat.shape)
    shading = (shading / shading[mid][hc]).astype(np.float32)
    if acq.banding_depth > 0 and acq.banding_waves:
        cyc = acq.banding_offset + acq.banding_scale * cosine_field(pos, acq.banding_waves)
        shading = shading * banding_attenuation(cyc, acq.banding_depth, acq.banding_width).astype(np.float32)

    window = kspace_window(acq.rows, acq.cols, acq.phase_resolution, acq.apodization)
    noise_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    sigma = 1.0 / acq.snr

    pixels = np.empty((n_s, n_t, acq.rows, acq.cols), dtype=np.float32)
    masks = np.empty((n_s, n_t, acq.rows, acq.cols), dtype=np.uint8)
    slice_info = []
    for s in range(n_s):
        shape = _cycle_shape(cfg, rr[s])
        bg_rng = np.random.default_rng(np.random.SeedSequence([seed, 3, s]))
        bg = render_background(cfg, lat, inf, float(depths[s]), sig, bg_rng, sp)
        btex = smooth_texture(bg_rng, lat.shape, 6.0 / sp)
        geo = SliceGeometry(
            depth=float(depths[s] + djit[s]), lat=lat, inf=inf, shift=mis[s], phases=trig[s] / rr[s], shape=shape
        )
        rend = render_heart_slice(cfg, tab, geo, bg, sig, sp, btex)
        img = acquire(rend.signal * shading[s][None], window, sigma, noise_rng)
        pixels[s] = np.clip(np.rint(img * acq.gain), 0.0, MAX_VALUE)
        masks[s] = rend.labels
        n_scar = int((rend.labels == LABEL_SCAR).sum())
        slice_info.append(
            {
                "index": s,
                "depth_mm": round(float(depths[s]), 2),
                "level": level_of_depth(float(depths[s]), tab.cavity_length, tab.total_length),
                "rr_ms": float(rr[s]),
                "misregistration_mm": [round(float(v), 3) for v in mis[s]],
                "scar_pixels": n_scar,
                "scar": int(n_scar > 0),
            }
        )

    slice_labels = [int(np.any(masks[s] == LABEL_SCAR)) for s in range(n_s)]
    ref_shape = _cycle_shape(cfg, float(np.median(rr)))
    edv, esv, ef, mass = volumes(cfg, tab, ref_shape)
    rr_ref = float(np.median(rr))
    es_phase = int(np.rint((ref_shape.p_es * rr_ref - acq.first_trigger_ms) / (rr_ref / n_t))) % n_t
    truth = GroundTruth(
        study_label=int(any(slice_labels)),
        slice_labels=slice_labels,
        segments=segment_table(cfg, tab, ref_shape),
        masks=masks,
        scenario=cfg.pathology.scenario,
        subtype=cfg.pathology.subtype,
        seed=seed,
        profile=acq.profile,
        edv_ml=edv,
        esv_ml=esv,
        ef_pct=ef,
        lv_mass_g=mass,
        es_phase=es_phase,
        slices=slice_info,
        config=cfg.to_dict(),
    )

    pid = patient_id_for(seed)
    study_uid = _uid("study", seed)
    series_uids = [_uid("series", seed, s) for s in range(n_s)]
    sop_uids = np.array([[_uid("sop", seed, s, t) for t in range(n_t)] for s in range(n_s)], dtype=object)
    cine = CineStudy(
        pixels=pixels,
        affine=affine,
        trigger_times=trig,
        rr_interval=float(np.median(rr)),
        rr_intervals=rr,
        study_uid=study_uid,
        series_uids=series_uids,
        patient_id=pid,
        sop_uids=sop_uids,
        acquisition=Acquisition(
            vendor=acq.vendor, field_strength=acq.field_strength, sequence=acq.sequence, model=acq.model
        ),
        slice_thickness=float(round(acq.slice_thickness, 3)),
        source=f"stran.phantom {GENERATOR_VERSION} seed={seed}",
        notes=[f"synthetic phantom (stran.phantom {GENERATOR_VERSION}), seed {seed}"],
    )
    return PhantomStudy(cine=cine, truth=truth, config=cfg)
