"""Rasterise one short-axis slice over all phases: thorax background + beating heart, with partial volume.

Edges are anti-aliased analytically (a one-pixel linear ramp on the radial
distance to each boundary) and the slice thickness is sampled with a few
sub-planes, so every pixel holds tissue *fractions*; signal = sum of
fraction x tissue signal. The label mask is the majority class of the same
fractions (0 background, 1 LV blood incl. papillary muscles, 2 LV
myocardium, 3 RV blood, 4 scar = LV myocardium whose majority is scar).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stran.phantom.anatomy import N_ANGLES
from stran.phantom.config import PhantomConfig
from stran.phantom.motion import CycleShape, contraction, material_depth, regional_drive, twist_deg, wall_radii
from stran.phantom.tables import HeartTables

LABEL_BACKGROUND, LABEL_LV, LABEL_MYO, LABEL_RV, LABEL_SCAR = 0, 1, 2, 3, 4
RIM_SIGNAL = 0.15  # India-ink chemical-shift rim, relative to myocardium


@dataclass
class SliceGeometry:
    """Where a slice cuts the heart and how its pixels map to the heart frame."""

    depth: float  # plane depth (mm from the ED base), including breath-hold jitter
    lat: np.ndarray  # (H, W) heart-frame lateral coordinate of each pixel (mm), body frame
    inf: np.ndarray  # (H, W) inferior coordinate
    shift: np.ndarray  # (2,) breath-hold in-plane heart shift (lat, inf)
    phases: np.ndarray  # (T,) phase fractions of RR
    shape: CycleShape


def _ramp(x: np.ndarray, inv_px: float) -> np.ndarray:
    """Fraction inside a boundary at signed distance ``x`` mm (positive = inside), one-pixel ramp."""
    return np.clip(0.5 + x * inv_px, 0.0, 1.0)


def _ellipse_inside(lat: np.ndarray, inf: np.ndarray, centre, half_axes, angle_deg: float, inv_px: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    x = (lat - centre[0]) * c + (inf - centre[1]) * s
    y = -(lat - centre[0]) * s + (inf - centre[1]) * c
    rho = np.hypot(x, y)
    q = np.hypot(x / half_axes[0], y / half_axes[1])
    dist = rho * (1.0 / np.maximum(q, 1e-6) - 1.0)  # radial distance to the boundary (approx.)
    return _ramp(dist, inv_px)


def _disk(lat: np.ndarray, inf: np.ndarray, centre, radius: float, inv_px: float) -> np.ndarray:
    return _ramp(radius - np.hypot(lat - centre[0], inf - centre[1]), inv_px)


def smooth_texture(rng: np.random.Generator, shape: tuple[int, ...], sigma_px: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px, mode="wrap")
    return (n - n.mean()) / max(float(n.std()), 1e-9)


def render_background(
    cfg: PhantomConfig,
    lat: np.ndarray,
    inf: np.ndarray,
    depth: float,
    sig: dict[str, float],
    rng: np.random.Generator,
    spacing: float,
) -> np.ndarray:
    """Static thorax of one slice (H, W): body, subcutaneous fat, chest-wall muscle, lungs with vessels,
    spine, descending aorta and (towards the apex) liver. Signals relative to myocardium."""
    an = cfg.anatomy
    inv = 1.0 / spacing
    tex = smooth_texture(rng, lat.shape, 4.0 / spacing)
    amp = cfg.texture
    ax = an.body_half_axes
    body = _ellipse_inside(lat, inf, an.body_centre, ax, an.body_angle, inv)
    t1 = an.subcutaneous_fat
    t2 = t1 + an.chest_muscle
    below_fat = _ellipse_inside(lat, inf, an.body_centre, (ax[0] - t1, ax[1] - t1), an.body_angle, inv)
    cavity = _ellipse_inside(lat, inf, an.body_centre, (ax[0] - t2, ax[1] - t2), an.body_angle, inv)
    fat = body - below_fat
    muscle = below_fat - cavity

    spine = _disk(lat, inf, an.spine_centre, an.spine_radius, inv) * cavity
    aorta = _disk(lat, inf, an.aorta_centre, an.aorta_radius, inv) * cavity * (1.0 - spine)
    zfrac = depth / an.total_length
    liver_r = an.liver_radius * float(np.clip((zfrac - 0.35) / 0.55, 0.0, 1.0))
    liver = (_disk(lat, inf, an.liver_centre, liver_r, inv) if liver_r > 1.0 else np.zeros_like(lat)) * cavity
    liver *= 1.0 - np.maximum(spine, aorta)
    lung = np.clip(cavity - spine - aorta - liver, 0.0, 1.0)

    vessels = np.zeros_like(lat)
    h, w = lat.shape
    for _ in range(an.lung_vessels):
        r = float(rng.uniform(0.8, 2.5))
        j, i = int(rng.integers(h)), int(rng.integers(w))
        k = int(np.ceil(r / spacing)) + 2
        box = (slice(max(j - k, 0), j + k + 1), slice(max(i - k, 0), i + k + 1))
        c = (lat[j, i], inf[j, i])
        vessels[box] = np.maximum(vessels[box], _disk(lat[box], inf[box], c, r, inv))
    vessels *= lung

    img = (
        fat * sig["fat"] * (1.0 + amp * tex)
        + muscle * sig["muscle"] * (1.0 + amp * tex)
        + spine * sig["marrow"] * (1.0 + 2.0 * amp * tex)
        + aorta * sig["blood"] * 0.9
        + liver * sig["liver"] * (1.0 + amp * tex)
        + lung * sig["lung"] * (1.0 + 0.4 * tex)
        + vessels * (0.45 * sig["blood"] - sig["lung"])
    )
    return np.clip(img, 0.0, None).astype(np.float32)


@dataclass
class SliceRender:
    signal: np.ndarray  # (T, H, W) float32, relative to myocardium, before shading and acquisition
    labels: np.ndarray  # (T, H, W) uint8


def _gather(stack: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Look (K, T, A) tables up at flat (phase, angle) indices: returns (K, *index.shape).

    Nearest neighbour on the 1-degree grid: at a 30 mm radius that is a
    0.26 mm arc, far below a pixel.
    """
    k = stack.shape[0]
    return stack.reshape(k, -1)[:, index]


def render_heart_slice(
    cfg: PhantomConfig,
    tab: HeartTables,
    geo: SliceGeometry,
    background: np.ndarray,
    sig: dict[str, float],
    spacing: float,
    blood_texture: np.ndarray,
) -> SliceRender:
    an, mo, pat, acq = cfg.anatomy, cfg.motion, cfg.pathology, cfg.acquisition
    n_t = geo.phases.size
    h_img, w_img = background.shape
    inv = 1.0 / spacing
    lt = tab.total_length
    c_g = contraction(geo.phases, geo.shape)  # (T,)

    # heart centre per phase: breath-hold shift + systolic translation + axis tilt drift
    tilt = np.tan(np.deg2rad(acq.axis_tilt)) * max(geo.depth, 0.0)
    td = np.deg2rad(acq.axis_tilt_direction)
    tilt_vec = np.array([-np.sin(td), -np.cos(td)]) * tilt
    centre = geo.shift[None, :] + tilt_vec[None, :] + np.asarray(mo.translation)[None, :] * c_g[:, None]  # (T, 2)

    n_sub = max(1, int(acq.sub_planes))
    offsets = acq.slice_thickness * ((np.arange(n_sub) + 0.5) / n_sub - 0.5)
    twist_scale = float(np.clip(np.mean(pat.segment_f), 0.3, 1.0))

    # per sub-plane and phase: material depth, twist and radii tables (T, A)
    subs = []
    r_max = 0.0
    for off in offsets:
        z0 = material_depth(geo.depth + off, c_g, mo.base_descent, lt)
        psi = twist_deg(z0, c_g, mo.twist_base, mo.twist_apex, lt) * twist_scale
        rows = {
            name: tab.rows(name, z0)
            for name in ("r_endo", "r_epi", "f", "delay", "flash", "rv_depth", "fat", "scar_lo", "scar_hi", "texture")
        }
        atr = z0 < 0
        beyond = z0 > lt
        g = regional_drive(geo.phases, rows["f"], rows["delay"], rows["flash"], geo.shape)
        g[atr] = 0.0
        r_endo, r_epi = wall_radii(rows["r_endo"], rows["r_epi"], g, mo.radial_shortening, mo.longitudinal_shortening)
        r_endo[beyond] = 0.0
        r_epi[beyond] = 0.0
        rv_in = r_epi + rows["rv_depth"] * (1.0 - mo.rv_shortening * c_g)[:, None]
        rv_out = rv_in + an.rv_wall * np.clip(rows["rv_depth"] / an.rv_wall, 0.0, 1.0)
        fat_out = np.maximum(rv_out, r_epi) + np.where(r_epi > 0, rows["fat"], 0.0)
        stack = np.stack([r_endo, r_epi, rv_in, rv_out, fat_out, rows["texture"], rows["scar_lo"], rows["scar_hi"]])
        subs.append((z0, psi, atr, g, stack.astype(np.float32)))
        r_max = max(r_max, float(fat_out.max()))

    # region of interest around the heart (bed included)
    reach = r_max + an.mediastinum_gap + float(np.abs(centre).max()) + 3.0 * spacing
    sel = (np.abs(geo.lat) <= reach) & (np.abs(geo.inf) <= reach)
    rows_any = np.where(sel.any(axis=1))[0]
    cols_any = np.where(sel.any(axis=0))[0]
    signal = np.broadcast_to(background, (n_t, h_img, w_img)).copy()
    labels = np.zeros((n_t, h_img, w_img), dtype=np.uint8)
    if rows_any.size == 0 or cols_any.size == 0 or r_max <= 0:
        return SliceRender(signal, labels)
    r0, r1 = rows_any[0], rows_any[-1] + 1
    q0, q1 = cols_any[0], cols_any[-1] + 1
    lat = geo.lat[r0:r1, q0:q1].astype(np.float32)
    inf = geo.inf[r0:r1, q0:q1].astype(np.float32)
    bg = background[r0:r1, q0:q1]
    btex = blood_texture[r0:r1, q0:q1]

    lat_t = lat[None] - centre[:, 0, None, None].astype(np.float32)
    inf_t = inf[None] - centre[:, 1, None, None].astype(np.float32)
    rho = np.hypot(lat_t, inf_t)
    phi_s = np.degrees(np.arctan2(-lat_t, -inf_t))
    t_base = (np.arange(n_t, dtype=np.int32) * N_ANGLES)[:, None, None]
    has_scar = bool(pat.has_scar)

    acc = {
        k: np.zeros(rho.shape, dtype=np.float32)
        for k in ("lv", "pm", "myo", "scar", "fatf", "rim", "rv", "rvw", "fat", "la", "law", "myo_sig")
    }
    for z0, psi, atr, g, stack in subs:
        a = np.rint((phi_s - psi[:, None, None].astype(np.float32)) * (N_ANGLES / 360.0)).astype(np.int32)
        a %= N_ANGLES
        a += t_base
        r_endo, r_epi, rv_in, rv_out, fat_out, tex = _gather(stack[:6], a)
        if has_scar:
            s_lo, s_hi = _gather(stack[6:], a)
        in_endo = _ramp(r_endo - rho, inv)
        in_epi = _ramp(r_epi - rho, inv)
        in_rv = _ramp(rv_in - rho, inv)
        in_rvw = _ramp(rv_out - rho, inv)
        in_fat = _ramp(fat_out - rho, inv)
        lvm = (~atr).astype(np.float32)[:, None, None]  # 1 where this sub-plane cuts the LV, 0 in the atrium
        myo = np.clip(in_epi - in_endo, 0.0, 1.0)
        rv = np.clip(in_rv - in_epi, 0.0, 1.0)
        rvw = np.clip(in_rvw - np.maximum(in_rv, in_epi), 0.0, 1.0)
        fat = np.clip(in_fat - np.maximum(in_rvw, in_epi), 0.0, 1.0)

        # scar band between fractions s_lo..s_hi of the current wall
        if has_scar:
            wall = r_epi - r_endo
            lo_t = np.where(s_lo <= 0.0, np.float32(1.0), _ramp(rho - (r_endo + s_lo * wall), inv))
            hi_t = np.where(s_hi >= 1.0, np.float32(1.0), _ramp(r_endo + s_hi * wall - rho, inv))
            scar = myo * lo_t * hi_t * lvm
        else:
            scar = 0.0

        # papillary muscles (inside the LV cavity, moving and thickening with the wall)
        pm = np.zeros_like(rho)
        for ang in an.papillary_angles:
            d_lo, d_hi = an.papillary_depths
            u = (z0 / tab.cavity_length - d_lo) / max(d_hi - d_lo, 1e-6)
            taper = np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1)) ** 0.5, 0.0)
            if not np.any(taper > 0):
                continue
            ai = int(round(ang)) % N_ANGLES
            rr = stack[0, :, ai]
            gk = g[:, ai]
            rad = an.papillary_radius * (1.0 + 0.3 * np.maximum(gk, 0.0)) * taper
            pos = np.maximum(rr - 1.05 * rad, 0.0)
            sa = np.deg2rad(ang + psi)
            c_lat, c_inf = -pos * np.sin(sa), -pos * np.cos(sa)
            d = np.hypot(lat_t - c_lat[:, None, None], inf_t - c_inf[:, None, None])
            pm = np.maximum(pm, _ramp(rad[:, None, None].astype(np.float32) - d, inv))
        pm = pm * in_endo * lvm

        # fatty metaplasia: bright fat with a dark rim, inside the scar
        fatf = np.zeros_like(rho)
        rim = np.zeros_like(rho)
        for focus in pat.fat_foci:
            zf = focus.depth * tab.cavity_length
            r_ip = np.sqrt(np.maximum(focus.radius_mm**2 - (z0 - zf) ** 2, 0.0))
            if not np.any(r_ip > 0):
                continue
            ai = int(round(focus.angle_deg)) % N_ANGLES
            wall_k = stack[1, :, ai] - stack[0, :, ai]
            pos = stack[0, :, ai] + focus.position * wall_k
            sa = np.deg2rad(focus.angle_deg + psi)
            c_lat, c_inf = -pos * np.sin(sa), -pos * np.cos(sa)
            d = np.hypot(lat_t - c_lat[:, None, None], inf_t - c_inf[:, None, None])
            rf = r_ip[:, None, None].astype(np.float32)
            inside = _ramp(rf - d, inv) * (rf > 0)
            ring = np.clip(_ramp(rf + 0.9 * spacing - d, inv) * (rf > 0) - inside, 0.0, 1.0)
            fatf = np.maximum(fatf, inside)
            rim = np.maximum(rim, ring)
        fatf = fatf * myo * lvm
        rim = np.minimum(rim * myo * lvm, myo - fatf)

        atrf = 1.0 - lvm
        acc["lv"] += in_endo * lvm - pm
        acc["pm"] += pm
        acc["myo"] += myo * lvm
        acc["scar"] += np.maximum(scar, fatf + rim)
        acc["fatf"] += fatf
        acc["rim"] += rim
        acc["rv"] += rv
        acc["rvw"] += rvw
        acc["fat"] += fat
        acc["la"] += in_endo * atrf
        acc["law"] += myo * atrf
        acc["myo_sig"] += myo * lvm * tex
    for k in acc:
        acc[k] /= len(subs)

    scar_plain = np.clip(acc["scar"] - acc["fatf"] - acc["rim"], 0.0, None)
    myo_normal = np.clip(acc["myo"] - acc["scar"], 0.0, None)
    tex_rel = acc["myo_sig"] / np.maximum(acc["myo"], 1e-6)
    blood = sig["blood"] * (1.0 + 0.5 * cfg.texture * btex)
    heart = (
        acc["lv"] * blood
        + acc["pm"] * sig["myocardium"]
        + myo_normal * sig["myocardium"] * (1.0 + tex_rel)
        + scar_plain * sig["myocardium"] * pat.scar_contrast * (1.0 + tex_rel)
        + acc["fatf"] * sig["fat"]
        + acc["rim"] * RIM_SIGNAL
        + acc["rv"] * blood
        + acc["rvw"] * sig["myocardium"]
        + acc["fat"] * sig["fat"]
        + acc["la"] * blood
        + acc["law"] * sig["myocardium"]
    )
    total = acc["lv"] + acc["pm"] + acc["myo"] + acc["rv"] + acc["rvw"] + acc["fat"] + acc["la"] + acc["law"]
    other = np.clip(1.0 - total, 0.0, 1.0)

    # mediastinal bed: the ED heart envelope + a gap, static, replaces the thorax behind the heart
    z0, psi, atr, g, stack = subs[len(subs) // 2]
    env = stack[4, 0]  # fat_out at the first phase (ED)
    env = np.where(env > 0, env + an.mediastinum_gap, 0.0)
    rho0 = np.hypot(lat - centre[0, 0], inf - centre[0, 1])
    phi0 = np.degrees(np.arctan2(-(lat - centre[0, 0]), -(inf - centre[0, 1])))
    ai = np.mod(phi0 - psi[0], 360.0) * (N_ANGLES / 360.0)
    i0 = np.floor(ai).astype(int) % N_ANGLES
    wa = ai - np.floor(ai)
    env_px = env[i0] * (1.0 - wa) + env[(i0 + 1) % N_ANGLES] * wa
    bed = _ramp(env_px - rho0, inv)
    behind = bg * (1.0 - bed) + bed * sig["mediastinum"]

    out = heart + other * behind[None]
    signal[:, r0:r1, q0:q1] = out

    lv_frac = acc["lv"] + acc["pm"]
    classes = np.stack([other + acc["rvw"] + acc["fat"] + acc["la"] + acc["law"], lv_frac, acc["myo"], acc["rv"]])
    lab = np.argmax(classes, axis=0).astype(np.uint8)
    is_scar = (lab == LABEL_MYO) & (acc["scar"] >= 0.5 * acc["myo"]) & (acc["scar"] > 0.05)
    lab[is_scar] = LABEL_SCAR
    labels[:, r0:r1, q0:q1] = lab
    return SliceRender(signal, labels)
