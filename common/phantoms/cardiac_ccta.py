"""Synthetic 4D ECG-gated cardiac CT (CCTA) of a beating left ventricle, with temporally sparse, jittery labels.

A stand-in for the data of the 4D CNN paper on sparsely labelled 4D CCTA (left ventricle and myocardium
segmentation with a sparse temporal Dice loss), implementing:

- Sec. 3.4 (dataset): contrast-enhanced cardiac CT sequences over one whole cardiac cycle, time as the fourth
  axis (``[X, Y, Z, T]``); only 2 to 9 frames of a sequence are annotated, always including end-diastole and
  end-systole (at the top end about every second frame), the others left unannotated (label 255);
- Sec. 4 (ejection fraction): each case's ejection fraction ``100 (V_max - V_min) / V_max`` of the LV cavity volume
  over the cycle, drawn so that a good share of cases is reduced (< 55 %, the clinical threshold the paper uses),
  with the end-diastolic and end-systolic frames;
- Sec. 4 (the remark on the manual labels): "annotations are done slice-by-slice, which results in jittery
  out-of-plane annotation profiles": an annotated frame's label is the true shape perturbed independently per axial
  slice (an in-plane shift of up to one voxel and a small change of each contour's size), while the image is drawn
  from the smooth true anatomy.

It is a phantom for testing the pipeline and demonstrating training, not a model of real anatomy. Synthetic are:
the anatomy (a truncated-spheroid LV cavity in a spheroidal myocardial shell, open towards a fibrous mitral
plate, the left atrium beyond it; a crescent right ventricle on the septum; the aortic root and ascending aorta;
epicardial fat; lungs filling the rest of the field of view; an anterior chest wall; a vertebral body with a
cortical rim and the descending aorta posteriorly; the liver dome below), its per-case size, position and
orientation, the motion (below), every HU value (:data:`HU_RANGES`), the white Gaussian noise and a mild smooth
non-uniformity, and the annotation jitter. The paper's scans are 0.24-0.46 mm in-plane, 2 mm slices, resampled
to 1 mm; the default here is 2 mm isotropic, a 128 x 128 x 96 mm field of view around the heart.

Orientation (as every phantom here): arrays ``[X, Y, Z, T]`` in the NIfTI RAS+ convention with affine
``diag(spacing)`` centred on world 0, so ``i`` grows to the patient's right, ``j`` anterior and ``k`` superior.
The LV long axis (base to apex) points to the left, anterior and inferior, tilted per case by up to 25 degrees.

Motion: the frames sample one cardiac cycle evenly (frame ``T`` would be frame 0 again; the frame interval, the
last ``spacing`` entry, only labels the time axis). A contraction curve ``c(t)`` rises from 0 at end-diastole to
1 at end-systole as a raised cosine over the systolic third of the cycle and falls back as a raised cosine over
diastole; the cavity volume is ``V_ED (1 - EF c(t))``, shared between long-axis shortening (the apex moves towards
the fixed base) and radial contraction. The myocardium's thickness is solved per frame so that its volume stays
constant (it thickens in systole). The right ventricle contracts along; the atria, aorta and the rest are still.

Labels: ``{0: background, 1: LV cavity, 2: LV myocardium}`` in annotated frames, 255 (the ignore value) in every
voxel of the others. The datalist fields ``ejection_fraction`` (%), ``end_diastole_frame`` and
``end_systole_frame`` come from the dense (every frame, unjittered) ground-truth cavity voxel counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from common.phantoms.drawing import (
    Canvas,
    Ellipsoid,
    HalfSpace,
    SmoothWarp,
    Tube,
    random_rotation,
    rim_profile,
    smooth_random_field,
    soft_edge,
)
from common.phantoms.registry import PhantomTask

__all__ = [
    "generate_cardiac_ccta",
    "generate_cardiac_ccta_dense",
    "CARDIAC_CCTA_LABELS",
    "HU_RANGES",
    "IGNORE_VALUE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_TASK",
]

logger = logging.getLogger(__name__)

DEFAULT_SHAPE = (64, 64, 48, 20)
#: 2 mm voxels; 50 ms between frames (20 frames over a 1 s R-R interval, 60 beats per minute).
DEFAULT_SPACING = (2.0, 2.0, 2.0, 0.05)
CARDIAC_CCTA_LABELS = {0: "background", 1: "LV cavity", 2: "LV myocardium"}
IGNORE_VALUE = 255

#: Range (HU) from which each tissue's value is drawn per case; the other chambers' blood is the LV blood pool's
#: value times a factor (``*_factor``), so each case has its own contrast between chambers.
HU_RANGES = {
    "lv_blood": (250.0, 450.0),
    "myocardium": (80.0, 150.0),
    "rv_factor": (0.55, 0.9),  # less contrast on the right (saline chaser)
    "la_factor": (0.9, 1.05),
    "aorta_factor": (0.95, 1.1),
    "annulus": (40.0, 80.0),  # fibrous mitral annulus and valve plane
    "fat": (-110.0, -90.0),
    "lung": (-850.0, -750.0),
    "muscle": (40.0, 60.0),
    "liver": (60.0, 100.0),
    "cancellous_bone": (250.0, 350.0),
    "cortical_bone": (600.0, 900.0),
}
#: The right ventricle's blood is at least this much brighter than the myocardium (HU).
RV_MIN_CONTRAST = 70.0
NOISE_SIGMA_RANGE = (15.0, 35.0)
HU_CLIP = (-1024.0, 3071.0)

#: Base-to-apex direction of the LV long axis before the per-case tilt: left, anterior, inferior.
NOMINAL_LONG_AXIS = np.array([-0.6, 0.55, -0.45]) / np.linalg.norm([-0.6, 0.55, -0.45])
#: Direction from the LV axis towards the septum and right ventricle before projection: right and anterior.
NOMINAL_SEPTUM = np.array([1.0, 0.7, 0.2])
MAX_TILT_DEG = 25.0
#: Ejection fraction (%) of reduced and of normal cases, and the share of reduced ones.
EF_REDUCED, EF_NORMAL, P_REDUCED = (25.0, 50.0), (57.0, 75.0), 0.35
LABELED_RANGE = (2, 9)
PLATE_MM = 3.0  # mitral plate thickness beyond the base plane
CAVITY_OFFSET = 0.2  # the cavity spheroid's centre lies this fraction of its long semi-axis above the base plane
#: Slice-by-slice annotation jitter (mm): in-plane shift sigma and limit, contour size change sigma and limit; about
#: a third of a voxel typical and one voxel at most on the default 2 mm grid.
JITTER_MM = (0.7, 2.0, 0.5, 2.0)


def _check_kwargs(shape: Any, spacing: Any, n_labeled: Any) -> tuple[tuple[int, ...], tuple[float, ...], int | None]:
    """Check the generator's arguments.

    Args:
        shape: array shape ``(X, Y, Z, T)``.
        spacing: voxel size in mm and the frame interval in seconds.
        n_labeled: annotated frames per case, or None.

    Returns:
        ``(shape, spacing, n_labeled)`` normalised.

    Raises:
        TypeError: ``n_labeled`` is not None or an integer.
        ValueError: a bad shape or spacing, fewer than 4 frames, or ``n_labeled`` out of range.
    """
    if not isinstance(shape, (list, tuple, np.ndarray)) or len(shape) != 4:
        raise ValueError(f"shape={shape!r}; expected four positive integers (X, Y, Z, T)")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"shape={shape!r}; expected four positive integers (X, Y, Z, T)")
    if shape[3] < 4:
        raise ValueError(f"shape={list(shape)!r}: {shape[3]} frames; expected at least 4 over the cardiac cycle")
    if not isinstance(spacing, (list, tuple, np.ndarray)) or len(spacing) != 4:
        raise ValueError(f"spacing={spacing!r}; expected four positive numbers (mm, mm, mm, s)")
    if not all(isinstance(s, (int, float, np.number)) and math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing={spacing!r}; expected four positive numbers (mm, mm, mm, s)")
    if n_labeled is not None:
        if isinstance(n_labeled, bool) or not isinstance(n_labeled, (int, np.integer)):
            raise TypeError(f"n_labeled={n_labeled!r}; expected None or an integer")
        if not LABELED_RANGE[0] <= n_labeled <= min(LABELED_RANGE[1], shape[3]):
            raise ValueError(
                f"n_labeled={n_labeled!r}; expected None or {LABELED_RANGE[0]}..{min(LABELED_RANGE[1], shape[3])}"
            )
        n_labeled = int(n_labeled)
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing), n_labeled


def _truncated_spheroid_volume(a: np.ndarray, r: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Return the volume of a spheroid (semi-axes ``a`` axial, ``r`` radial) beyond a plane ``e`` below its centre.

    Args:
        a: the axial semi-axis (mm).
        r: the radial semi-axis (mm).
        e: the distance of the cutting plane from the centre (mm, ``0 <= e <= a``).

    Returns:
        ``pi r^2 ((a + e) - (a^3 + e^3) / (3 a^2))`` in mm^3.
    """
    return np.pi * r**2 * ((a + e) - (a**3 + e**3) / (3.0 * a**2))


def _contraction(rng: np.random.Generator, n_frames: int) -> tuple[np.ndarray, int]:
    """Draw the contraction curve: 0 at end-diastole, 1 at end-systole, smooth and periodic over the frames.

    Args:
        rng: the random generator.
        n_frames: frames over the cycle.

    Returns:
        ``c`` of shape ``(T,)`` and the end-diastolic frame.
    """
    ed = 0 if rng.random() < 0.6 else int(rng.integers(n_frames))
    systole = float(np.clip(round(rng.uniform(0.3, 0.38) * n_frames), 1, n_frames - 1)) / n_frames
    phase = ((np.arange(n_frames) - ed) % n_frames) / n_frames
    rise = 0.5 - 0.5 * np.cos(np.pi * phase / systole)
    fall = 0.5 + 0.5 * np.cos(np.pi * (phase - systole) / (1.0 - systole))
    return np.where(phase <= systole, rise, fall), ed


def _wall_thickness(a: np.ndarray, r: np.ndarray, e: np.ndarray, myocardium: float, apex_ratio: float) -> np.ndarray:
    """Solve per frame for the radial wall thickness that keeps the myocardial volume (bisection).

    Args:
        a: ``(T,)`` cavity axial semi-axis (mm).
        r: ``(T,)`` cavity radial semi-axis (mm).
        e: ``(T,)`` base plane's distance from the centre (mm).
        myocardium: the myocardial volume to keep (mm^3).
        apex_ratio: apical over radial wall thickness.

    Returns:
        ``(T,)`` radial wall thickness in mm.
    """
    cavity = _truncated_spheroid_volume(a, r, e)
    lo, hi = np.zeros_like(a), np.full_like(a, 80.0)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        too_thin = _truncated_spheroid_volume(a + apex_ratio * mid, r + mid, e) - cavity < myocardium
        lo, hi = np.where(too_thin, mid, lo), np.where(too_thin, hi, mid)
    return 0.5 * (lo + hi)


class _Heart:
    """The case's LV geometry per frame, its local frame, and the right ventricle (all mm, world coordinates).

    Args:
        rng: the random generator.
        n_frames: frames over the cycle.
    """

    def __init__(self, rng: np.random.Generator, n_frames: int) -> None:
        axis = random_rotation(rng, MAX_TILT_DEG) @ NOMINAL_LONG_AXIS
        septum = NOMINAL_SEPTUM - (NOMINAL_SEPTUM @ axis) * axis
        roll = np.deg2rad(rng.uniform(-15.0, 15.0))
        e1 = septum / np.linalg.norm(septum)
        e2 = np.cross(axis, e1)
        self.e1 = np.cos(roll) * e1 + np.sin(roll) * e2
        self.e2 = np.cross(axis, self.e1)
        self.axis = axis
        length = rng.uniform(70.0, 95.0)  # base plane to apex, end-diastole
        self.radius0 = rng.uniform(20.0, 27.5)  # short-axis diameter 40-55 mm
        wall0 = rng.uniform(8.0, 12.0)
        self.apex_ratio = rng.uniform(0.7, 0.9)
        self.target_ef = rng.uniform(*EF_REDUCED) if rng.random() < P_REDUCED else rng.uniform(*EF_NORMAL)
        shortening = rng.uniform(0.08, 0.18) * min(1.0, self.target_ef / 60.0)
        self.contraction, self.ed_frame = _contraction(rng, n_frames)
        # the LV's mid-cavity sits left of and anterior to the volume's centre, leaving room for the atrium
        center = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-5, 5)]) + np.array([-4.0, 10.0, -5.0])
        self.base = center - axis * (0.45 * length)

        c = self.contraction
        s_long = 1.0 - shortening * c
        s_rad = np.sqrt((1.0 - self.target_ef / 100.0 * c) / s_long)
        a0 = length / (1.0 + CAVITY_OFFSET)
        self.a, self.e, self.r = a0 * s_long, CAVITY_OFFSET * a0 * s_long, self.radius0 * s_rad
        myocardium = float(
            _truncated_spheroid_volume(a0 + self.apex_ratio * wall0, self.radius0 + wall0, CAVITY_OFFSET * a0)
            - _truncated_spheroid_volume(a0, self.radius0, CAVITY_OFFSET * a0)
        )
        self.wall = _wall_thickness(self.a, self.r, self.e, myocardium, self.apex_ratio)
        self.outer_a, self.outer_r = self.a + self.apex_ratio * self.wall, self.r + self.wall
        # right ventricle: a spheroid beside the septum (the LV drawn over it leaves a crescent), contracting too
        self.rv_length = 0.5 * length * rng.uniform(0.85, 1.0)
        self.rv_u = self.rv_length * rng.uniform(0.75, 0.9)
        self.rv_depth0, self.rv_width = rng.uniform(16.0, 22.0), (self.radius0 + wall0) * rng.uniform(0.9, 1.2)
        self.rv_depth = self.rv_depth0 * (1.0 - rng.uniform(0.2, 0.35) * c)

    def local(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return local coordinates: ``u`` along the long axis from the base plane, ``v`` towards the septum, ``w``.

        Args:
            x: world x (mm), broadcastable with ``y`` and ``z``.
            y: world y (mm).
            z: world z (mm).

        Returns:
            ``(u, v, w)`` in mm, each of the broadcast shape.
        """
        dx, dy, dz = x - np.float32(self.base[0]), y - np.float32(self.base[1]), z - np.float32(self.base[2])
        a, e1, e2 = (v.astype(np.float32) for v in (self.axis, self.e1, self.e2))
        return (
            dx * a[0] + dy * a[1] + dz * a[2],
            dx * e1[0] + dy * e1[1] + dz * e1[2],
            dx * e2[0] + dy * e2[1] + dz * e2[2],
        )

    def world(self, u: float, v: float, w: float) -> np.ndarray:
        """Return the world position (mm) of local coordinates.

        Args:
            u: along the long axis from the base plane (mm).
            v: towards the septum (mm).
            w: the third axis (mm).

        Returns:
            the ``(3,)`` world position.
        """
        return self.base + u * self.axis + v * self.e1 + w * self.e2

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return a world box holding the LV, the mitral plate and the RV in every frame.

        Returns:
            the lower and upper corners in mm.
        """
        lo = np.array([-PLATE_MM - 1.0, -self.outer_r.max(), -max(self.outer_r.max(), self.rv_width + 3.0)])
        reach = self.outer_r + 2.0 * self.rv_depth + 3.0
        hi = np.array([(self.e + self.outer_a).max(), reach.max(), -lo[2]])
        lo[0] = min(lo[0], self.rv_u - self.rv_length - 3.0)
        hi[0] = max(hi[0], self.rv_u + self.rv_length + 3.0)
        corners = np.array(
            [self.world(u, v, w) for u in (lo[0], hi[0]) for v in (lo[1], hi[1]) for w in (lo[2], hi[2])]
        )
        return corners.min(axis=0), corners.max(axis=0)

    def frame_sdfs(self, t: int, uvw: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        """Return the signed distances (mm, negative inside) of frame ``t``'s moving shapes.

        Args:
            t: the frame.
            uvw: local coordinates from :meth:`local`.

        Returns:
            ``cavity``, ``outer`` (the LV epicardium, both cut at the base plane), ``plate`` (the mitral plate
            beyond it), ``rv`` and ``rv_wall``.
        """
        u, v, w = uvw
        rho2 = v * v + w * w
        ell = _spheroid_sdf(u, rho2, self.e[t], self.a[t], self.r[t])
        outer = _spheroid_sdf(u, rho2, self.e[t], self.outer_a[t], self.outer_r[t])
        rv_center = (self.rv_u, self.outer_r[t] + 0.35 * self.rv_depth[t], 0.0)
        rv_radii = (self.rv_length, self.rv_depth[t], self.rv_width)
        return {
            "cavity": np.maximum(ell, -u),
            "outer": np.maximum(outer, -u),
            "plate": np.maximum(outer, np.maximum(u, -u - np.float32(PLATE_MM))),
            "rv": _ellipsoid_sdf((u, v, w), rv_center, rv_radii),
            "rv_wall": _ellipsoid_sdf((u, v, w), rv_center, tuple(r + 3.0 for r in rv_radii)),
        }


def _spheroid_sdf(u: np.ndarray, rho2: np.ndarray, center: float, a: float, r: float) -> np.ndarray:
    """Return the first-order signed distance ``(F - 1) F / |grad F|`` of a spheroid on its own axis.

    Args:
        u: coordinate along the axis (mm).
        rho2: squared distance from the axis (mm^2).
        center: the centre's ``u`` (mm).
        a: the axial semi-axis (mm).
        r: the radial semi-axis (mm).

    Returns:
        the signed distance in mm (exact in sign, good near the surface).
    """
    q = (u - np.float32(center)) * np.float32(1.0 / a)
    f2 = q * q + rho2 * np.float32(1.0 / r**2)
    g2 = q * q * np.float32(1.0 / a**2) + rho2 * np.float32(1.0 / r**4)
    f = np.sqrt(f2)
    return (f - 1.0) * f / np.sqrt(np.maximum(g2, np.float32(1e-12)))


def _ellipsoid_sdf(q: tuple[np.ndarray, ...], center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Return the first-order signed distance of an ellipsoid with axes along the local coordinates.

    Args:
        q: three local coordinate arrays (mm).
        center: the centre in local coordinates (mm).
        radii: the semi-axes (mm).

    Returns:
        the signed distance in mm (exact in sign, good near the surface).
    """
    s = [(qi - np.float32(ci)) * np.float32(1.0 / ri) for qi, ci, ri in zip(q, center, radii, strict=True)]
    f = np.sqrt(s[0] * s[0] + s[1] * s[1] + s[2] * s[2])
    g = np.sqrt(sum((si * np.float32(1.0 / ri)) ** 2 for si, ri in zip(s, radii, strict=True)))
    return (f - 1.0) * f / np.maximum(g, np.float32(1e-6))


def _labels(sdfs: dict[str, np.ndarray], cavity_offset: Any = 0.0, outer_offset: Any = 0.0) -> np.ndarray:
    """Return the label of one frame: 1 inside the cavity, 2 in the myocardium, 0 elsewhere.

    Args:
        sdfs: the frame's signed distances (:meth:`_Heart.frame_sdfs`).
        cavity_offset: added to the cavity's distance (mm; an annotator's contour drawn smaller if positive).
        outer_offset: added to the epicardium's distance (mm).

    Returns:
        the uint8 label.
    """
    cavity = sdfs["cavity"] + cavity_offset <= 0
    outer = sdfs["outer"] + outer_offset <= 0
    return np.where(cavity, np.uint8(1), np.where(outer, np.uint8(2), np.uint8(0)))


def _static_anatomy(rng: np.random.Generator, canvas: Canvas, heart: _Heart, hu: dict[str, float]) -> None:
    """Paint everything that does not move: fat, lungs, chest wall, spine, descending aorta, liver, LA, aortic root.

    Args:
        rng: the random generator.
        canvas: the 3D canvas, filled with lung.
        heart: the case's heart.
        hu: the case's HU values.
    """
    ed = heart.ed_frame
    r_la = rng.uniform(17.0, 22.0)
    la_center = heart.world(-(PLATE_MM + 2.0 + r_la), -0.3 * r_la, 0.0) + np.array([0.0, -4.0, 0.0])
    la_radii = np.array([1.1, 0.85, 0.9]) * r_la
    r_ao = rng.uniform(11.0, 14.0)
    root = heart.world(-(PLATE_MM + 1.5 + r_ao), 0.55 * heart.radius0 + 4.0, 0.0)
    ascending = np.array([root, root + [4.0, 3.0, 25.0], root + [6.0, 0.0, 70.0]])
    # the pericardial fat encloses the chambers at end-diastole, with a margin
    r_out, rv_v = heart.outer_r[ed], heart.outer_r[ed] + 0.35 * heart.rv_depth0
    points = [heart.world(heart.e[ed] + heart.outer_a[ed], 0.0, 0.0), la_center - la_radii, la_center + la_radii]
    points += [root - r_ao, root + r_ao, heart.world(heart.rv_u, rv_v + heart.rv_depth0, 0.0)]
    points += [heart.world(heart.rv_u, rv_v, sign * heart.rv_width) for sign in (-1.0, 1.0)]
    points += [heart.world(heart.e[ed], sign * r_out, 0.0) for sign in (-1.0, 1.0)]
    points += [heart.world(heart.e[ed], 0.0, sign * r_out) for sign in (-1.0, 1.0)]
    points = np.array(points)
    fat_center = 0.5 * (points.min(axis=0) + points.max(axis=0))
    fat_radii = 0.5 * (points.max(axis=0) - points.min(axis=0)) + rng.uniform(6.0, 12.0)
    midline = heart.base[0] + rng.uniform(-2.0, 6.0)
    spine = np.array([midline, -62.0 + rng.uniform(-3.0, 3.0), 0.0])
    liver_top = points[:, 2].min() + rng.uniform(0.0, 10.0)

    canvas.draw(Ellipsoid([midline + 60.0, spine[1] + 60.0, liver_top - 55.0], [90.0, 80.0, 55.0]), hu["liver"])
    canvas.draw(Ellipsoid([midline, spine[1] + 50.0, 0.0], [30.0, 60.0, np.inf], exponent=2.5), hu["fat"])
    canvas.draw(Ellipsoid(fat_center, fat_radii, exponent=2.5, warp=SmoothWarp(rng, 4.0, 70.0)), hu["fat"])
    chest = HalfSpace([0.0, fat_center[1] + fat_radii[1] - rng.uniform(4.0, 10.0), 0.0], [0.0, -1.0, 0.0])
    canvas.draw(chest, hu["muscle"])
    bone = rim_profile(hu["cancellous_bone"], hu["cortical_bone"], thickness=2.0)
    canvas.draw(Ellipsoid(spine, [rng.uniform(17.0, 21.0), rng.uniform(14.0, 17.0), np.inf]), bone)
    canvas.draw(Ellipsoid(spine + [-26.0, 17.0, 0.0], [11.0, 11.0, np.inf]), hu["aorta"])
    canvas.draw(Ellipsoid(la_center, la_radii, warp=SmoothWarp(rng, 2.0, 50.0)), hu["la"])
    canvas.draw(Tube.through(ascending, r_ao), hu["aorta"])


def _choose_frames(rng: np.random.Generator, n_frames: int, ed: int, es: int, n_labeled: int | None) -> list[int]:
    """Choose the annotated frames: end-diastole, end-systole and others, evenly spread or at random.

    Args:
        rng: the random generator.
        n_frames: frames over the cycle.
        ed: the end-diastolic frame.
        es: the end-systolic frame.
        n_labeled: how many, or None for a random count in 2..9.

    Returns:
        the sorted frame indices.
    """
    n = int(rng.integers(LABELED_RANGE[0], LABELED_RANGE[1] + 1)) if n_labeled is None else n_labeled
    n = min(n, n_frames)
    chosen = {ed, es}
    if rng.random() < 0.5:  # evenly through the cycle from end-diastole, as "every second frame"
        even = [int(round(ed + k * n_frames / n)) % n_frames for k in range(n)]
        extra = [t for t in dict.fromkeys(even) if t not in chosen]
        extra = list(rng.permutation(extra)[: max(n - 2, 0)]) if len(extra) > n - 2 else extra
        chosen.update(int(t) for t in extra)
    rest = np.array([t for t in range(n_frames) if t not in chosen])
    chosen.update(int(t) for t in rng.permutation(rest)[: n - len(chosen)])
    return sorted(chosen)


def generate_cardiac_ccta_dense(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    n_labeled: int | None = None,
) -> dict[str, Any]:
    """Generate one synthetic 4D cardiac CT case with its dense ground truth (for tests and figures).

    Draws exactly what :func:`generate_cardiac_ccta` draws (same ``rng`` use), so their common entries are equal.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z, T)``; the ``T`` frames sample one cardiac cycle.
        spacing: voxel size in mm and the frame interval in seconds.
        n_labeled: annotated frames per case (2-9, at most ``T``); None draws it from 2..9.

    Returns:
        the entries of :func:`generate_cardiac_ccta` and ``dense_label`` (uint8 ``[X, Y, Z, T]``, every frame,
        unjittered), ``cavity_voxels`` and ``myocardium_voxels`` (``(T,)`` counts of the dense label),
        ``target_ejection_fraction`` (%, before voxelisation), ``contraction`` (``(T,)``, 0 at end-diastole, 1 at
        end-systole), ``wall_mm`` (``(T,)`` radial wall thickness), ``hu`` (the case's HU values) and
        ``noise_sigma`` (HU).

    Raises:
        TypeError: ``n_labeled`` of the wrong type.
        ValueError: an argument out of range, or a field of view that misses the LV cavity.
    """  # noqa: DOC502 (raised by the argument check)
    shape, spacing, n_labeled = _check_kwargs(shape, spacing, n_labeled)
    n_frames = shape[3]
    heart = _Heart(rng, n_frames)
    hu = {name: float(rng.uniform(*HU_RANGES[name])) for name in HU_RANGES if not name.endswith("_factor")}
    for name in ("rv", "la", "aorta"):
        hu[name] = hu["lv_blood"] * float(rng.uniform(*HU_RANGES[f"{name}_factor"]))
    hu["rv"] = max(hu["rv"], hu["myocardium"] + RV_MIN_CONTRAST)  # the septum stays visible on the right
    canvas = Canvas(shape[:3], spacing[:3], background=hu["lung"])
    _static_anatomy(rng, canvas, heart, hu)
    canvas.image += smooth_random_field(rng, shape[:3], spacing[:3], correlation=40.0, std=rng.uniform(2.0, 5.0))

    frames = np.empty((n_frames, *shape[:3]), dtype=np.float32)
    frames[...] = canvas.image
    dense = np.zeros((n_frames, *shape[:3]), dtype=np.uint8)
    lo, hi = heart.bounds()
    pad = 2.0 * canvas.edge + 2.0 * float(max(spacing[:3]))
    found = canvas.region(lo - pad, hi + pad)
    if found is None:
        raise ValueError(f"shape={list(shape)}, spacing={list(spacing)}: the field of view misses the heart")
    box, axes = found
    uvw = heart.local(*axes)
    paint = (("rv_wall", "myocardium"), ("rv", "rv"), ("outer", "myocardium"), ("plate", "annulus"))
    for t in range(n_frames):
        sdfs = heart.frame_sdfs(t, uvw)
        view = frames[t][box]
        for key, tissue in (*paint, ("cavity", "lv_blood")):
            view += soft_edge(sdfs[key], canvas.edge) * (np.float32(hu[tissue]) - view)
        dense[t][box] = _labels(sdfs)

    cavity_voxels = (dense == 1).sum(axis=(1, 2, 3))
    myocardium_voxels = (dense == 2).sum(axis=(1, 2, 3))
    if cavity_voxels.max() == 0:
        raise ValueError(f"shape={list(shape)}, spacing={list(spacing)}: the field of view holds no LV cavity")
    ed, es = int(cavity_voxels.argmax()), int(cavity_voxels.argmin())
    ef = round(100.0 * float(cavity_voxels.max() - cavity_voxels.min()) / float(cavity_voxels.max()), 1)
    labeled = _choose_frames(rng, n_frames, ed, es, n_labeled)

    # Slice-by-slice annotation (Sec. 4): per axial slice an in-plane shift and contour size change, per frame.
    label = np.full((n_frames, *shape[:3]), IGNORE_VALUE, dtype=np.uint8)
    n_slices = axes[2].shape[2]
    for t in labeled:
        shift = np.clip(rng.normal(0.0, JITTER_MM[0], size=(2, n_slices)), -JITTER_MM[1], JITTER_MM[1])
        sizes = np.clip(rng.normal(0.0, JITTER_MM[2], size=(2, n_slices)), -JITTER_MM[3], JITTER_MM[3])
        x = axes[0] - shift[0].astype(np.float32)[None, None, :]
        y = axes[1] - shift[1].astype(np.float32)[None, None, :]
        sdfs = heart.frame_sdfs(t, heart.local(x, y, axes[2]))
        label[t] = 0
        label[t][box] = _labels(sdfs, sizes[0].astype(np.float32), sizes[1].astype(np.float32))

    noise_sigma = float(rng.uniform(*NOISE_SIGMA_RANGE))
    frames += rng.standard_normal(frames.shape, dtype=np.float32) * np.float32(noise_sigma)
    np.clip(frames, *HU_CLIP, out=frames)
    image = np.rint(frames, out=frames).astype(np.int16)
    logger.debug("cardiac CCTA phantom: shape %s, EF %.1f %%, ED %d, ES %d, frames %s", shape, ef, ed, es, labeled)
    return {
        "image": np.ascontiguousarray(np.moveaxis(image, 0, -1)),
        "label": np.ascontiguousarray(np.moveaxis(label, 0, -1)),
        "ejection_fraction": ef,
        "labeled_frames": labeled,
        "end_diastole_frame": ed,
        "end_systole_frame": es,
        "dense_label": np.ascontiguousarray(np.moveaxis(dense, 0, -1)),
        "cavity_voxels": cavity_voxels,
        "myocardium_voxels": myocardium_voxels,
        "target_ejection_fraction": float(heart.target_ef),
        "contraction": heart.contraction,
        "wall_mm": heart.wall,
        "hu": hu,
        "noise_sigma": noise_sigma,
    }


def generate_cardiac_ccta(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    n_labeled: int | None = None,
) -> dict[str, Any]:
    """Generate one synthetic 4D ECG-gated cardiac CT case with LV cavity and myocardium labels on a few frames.

    Stand-in for the 4D CCTA data of the sparse-temporal 4D CNN paper, Sec. 3.4 and 4 (see the module docstring);
    the phantom generator of the task ``cardiac_ccta_4d``. :func:`generate_cardiac_ccta_dense` gives the same case
    with its dense ground truth.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z, T)``; default ``(64, 64, 48, 20)``, the ``T`` frames one cardiac cycle.
        spacing: voxel size in mm and the frame interval in seconds; default ``(2, 2, 2, 0.05)``.
        n_labeled: annotated frames per case (2-9, at most ``T``); None draws it from 2..9.

    Returns:
        ``image`` int16 ``[X, Y, Z, T]`` (HU), ``label`` uint8 ``[X, Y, Z, T]`` with values
        :data:`CARDIAC_CCTA_LABELS` in annotated frames and 255 in every voxel of the others, and the datalist
        fields ``ejection_fraction`` (%, one decimal), ``labeled_frames`` (sorted frame indices),
        ``end_diastole_frame`` and ``end_systole_frame``.

    Raises:
        TypeError: ``n_labeled`` of the wrong type.
        ValueError: an argument out of range, or a field of view that misses the LV cavity.
    """  # noqa: DOC502 (raised by the argument check)
    case = generate_cardiac_ccta_dense(rng, shape, spacing, n_labeled)
    keys = ("image", "label", "ejection_fraction", "labeled_frames", "end_diastole_frame", "end_systole_frame")
    return {key: case[key] for key in keys}


#: The task this module declares (found by :data:`common.phantoms.registry.PHANTOM_TASKS`).
PHANTOM_TASK = PhantomTask(
    name="cardiac_ccta_4d",
    generator=generate_cardiac_ccta,
    labels=CARDIAC_CCTA_LABELS,
    modality={"0": "CT"},
    description=(
        "Synthetic 4D ECG-gated cardiac CT phantom (3D + time over one cardiac cycle, HU) of a beating left "
        "ventricle with LV cavity and myocardium labels on 2-9 frames (always end-diastole and end-systole; 255 "
        "elsewhere), slice-by-slice annotation jitter and the ejection fraction, standing in for the 4D CCTA data "
        "of the sparse temporal 4D CNN paper, Sec. 3.4 and 4"
    ),
    dicom_modality="CT",
    defaults={"shape": list(DEFAULT_SHAPE), "spacing": list(DEFAULT_SPACING), "n_labeled": None},
    version=1,
    spatial_dims=4,
    n_channels=1,
    ignore_value=IGNORE_VALUE,
    fields=("ejection_fraction", "labeled_frames", "end_diastole_frame", "end_systole_frame"),
)
