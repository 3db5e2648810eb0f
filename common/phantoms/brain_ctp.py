"""Synthetic brain CT perfusion (4D CT, 19 time points) with sparse 2D tissue annotations and a cranial-cavity mask.

A stand-in for the data of van de Leemput et al., "Multiclass brain tissue segmentation in 4D CT using
convolutional neural networks" (IEEE Access 7, 2019), Sec. III: 19 volumetric CT scans of the head acquired with
different exposures per time point after an intravenous contrast bolus, white matter (WM), grey matter (GM),
cerebrospinal fluid (CSF) and vessels annotated in one to three random orthogonal cross sections per patient
(Sec. III-C), only inside the intracranial soft tissue and without the cerebellum, everything else "not
annotated". It is a phantom for testing the pipeline and demonstrating training, not a model of real anatomy.

Orientation (as every phantom here): arrays ``[X, Y, Z]`` in the NIfTI RAS+ convention with affine
``diag(spacing)`` centred on world 0, so ``i`` grows to the patient's right, ``j`` anterior and ``k`` superior.
The image is ``[X, Y, Z, 19]`` int16 HU, the time points as channels (channels last).

Anatomy (mm, drawn in this order, later over earlier, with partial volume): air; scalp, face and neck soft tissue
(eyes, orbital fat, nasal and sphenoid air, a vertebral column); the skull, a shell of diploe between cortical
tables around the cranial cavity; the cranial cavity (cerebrum, posterior fossa and brain stem) filled with CSF;
the supratentorial brain, a cortical GM ribbon over WM, folded by sulci (CSF clefts lined with GM, sheets normal
to the surface drawn from a random field on the sphere); the cerebellum (GM over a WM core) below a tentorium
gap; deep GM nuclei (caudate, lentiform, thalamus); Sylvian and interhemispheric fissures; the falx and the
tentorium (dura, not annotated); lateral, third and fourth ventricles; the brain stem (WM); veins (superior
sagittal, straight and transverse sinuses, internal cerebral and cortical veins); arteries (internal carotid and
vertebral arteries, basilar, a circle of Willis with anterior, middle and posterior cerebral arteries and
cortical branches).

Contrast passage: each compartment adds an enhancement curve to its unenhanced HU: an arterial gamma-variate
bolus with recirculation peaking at about 20 s (frame 7 of the frame times :data:`FRAME_TIMES_S`, +-1 frame per
case), veins the arterial curve dispersed and delayed (peak about frame 10), GM and WM the arterial curve
convolved with an exponential residue of their mean transit time (GM peak +10..+20 HU, WM +4..+8 HU and at
most half of GM's), soft tissue a slow rise of a few HU, CSF and bone none. White noise per frame scales with
the inverse square root of the frame's relative exposure (:data:`EXPOSURES`); one frame's sigma (9-18 HU) exceeds
the 5-8 HU gap between GM and WM, so only the time course separates them. Optional rigid head motion between
frames (``motion_mm``).

Labels: ``{0: not annotated, 1: CSF, 2: WM, 3: GM, 4: vessel}``; the dense label (every cranial-cavity voxel:
its dominant compartment) is cut to 1-3 axis-aligned planes on distinct axes whose annotation region covers at
least 10 % of the plane (Sec. III-C), and to that region: the cranial cavity without the falx and tentorium and,
by default, without the posterior fossa (cerebellum, brain stem below the tentorium). The ``mask`` is the cranial
cavity (intracranial soft tissue, CSF and vessels above the foramen magnum; Sec. II-B-2).

Thin structures are kept visible on coarse grids: vessels are drawn at least 0.6 voxel in radius, and the cortex
is 3-4 mm thick, so the default 2 mm grid keeps a learnable GM ribbon (the paper's voxels are 0.5 mm).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from common.phantoms.drawing import (
    Canvas,
    Ellipsoid,
    Shape,
    SmoothWarp,
    Tube,
    Union,
    random_rotation,
    rim_profile,
    rotation_matrix,
    smooth_random_field,
    soft_edge,
)
from common.phantoms.registry import PhantomTask

__all__ = [
    "generate_brain_ctp",
    "generate_brain_ctp_dense",
    "rigidly_move_volume",
    "BRAIN_CTP_LABELS",
    "HU_RANGES",
    "ENHANCEMENT_RANGES",
    "FRAME_TIMES_S",
    "EXPOSURES",
    "N_TIME_POINTS",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_TASK",
]

logger = logging.getLogger(__name__)

DEFAULT_SHAPE = (96, 112, 96)
DEFAULT_SPACING = (2.0, 2.0, 2.0)
N_TIME_POINTS = 19

BRAIN_CTP_LABELS = {0: "not annotated", 1: "CSF", 2: "white matter", 3: "grey matter", 4: "vessel"}

#: Acquisition time (s after the start of the injection) of each frame: a baseline scan, 13 scans every 2 s over
#: the first pass, 5 scans every 5 s over the wash-out; the whole run takes under a minute (Sec. III-A).
FRAME_TIMES_S = (0.0, *(8.0 + 2.0 * np.arange(13)), *(37.0 + 5.0 * np.arange(5)))
#: Relative exposure (tube current-time product) of each frame: a higher-dose baseline, low-dose first-pass frames
#: and medium-dose wash-out frames ("different exposures per time point", Sec. III-A). Noise ~ exposure^-1/2.
EXPOSURES = (2.0, *([1.0] * 13), *([1.5] * 5))

#: Range (HU) from which each unenhanced value is drawn per case. GM is WM plus a 5-8 HU gap, kept in 33-38 HU.
HU_RANGES = {
    "white_matter": (25.0, 30.0),
    "grey_matter": (33.0, 38.0),
    "gm_wm_gap": (5.0, 8.0),
    "csf": (5.0, 10.0),
    "blood": (38.0, 45.0),
    "soft_tissue": (40.0, 60.0),
    "diploe": (700.0, 900.0),
    "cortical_bone": (1200.0, 1500.0),
    "vertebra": (300.0, 450.0),
    "fat": (-110.0, -80.0),
    "vitreous": (5.0, 15.0),
    "sinus_air": (-980.0, -900.0),
}
#: Range (HU) of each compartment's peak enhancement over its unenhanced value.
ENHANCEMENT_RANGES = {
    "artery": (300.0, 500.0),
    "vein": (250.0, 420.0),
    "grey_matter": (10.0, 20.0),
    "white_matter": (4.0, 8.0),
    "soft_tissue": (3.0, 8.0),
}
#: Per-case noise sigma (HU) of a frame of relative exposure 1.
NOISE_SIGMA_RANGE = (13.0, 18.0)
AIR_HU = -1000.0
HU_CLIP = (-1024.0, 3071.0)

# Compartments whose fraction is tracked per voxel (enhancement and labels); everything else is static.
_SOFT, _CSF, _WM, _GM, _ARTERY, _VEIN = range(6)
_N_COMPARTMENTS = 6

# Template anatomy (mm, head upright, centred on the volume): cerebrum and posterior-fossa ellipsoids, brain stem.
_CEREBRUM = ((0.0, -2.0, 7.0), (66.0, 82.0, 60.0))
_FOSSA = ((0.0, -47.0, -45.0), (54.0, 36.0, 30.0))
_STEM = (
    np.array([[0.0, -16.0, -17.0], [0.0, -22.0, -45.0], [0.0, -28.0, -67.0], [0.0, -30.0, -85.0], [0, -31, -150]]),
    np.array([12.0, 13.0, 9.0, 8.0, 8.0]),
)
_FORAMEN_MAGNUM_Z = -80.0
_TENTORIUM = {"apex_y": -18.0, "apex_z": -16.0, "slope_y": 0.28, "slope_x": 0.3, "front_y": -22.0}
# The deep core kept out of the interhemispheric fissure: corpus callosum, thalami, third ventricle, midbrain.
_CORE = ((0.0, -4.0, -2.0), (100.0, 42.0, 26.0))


class _Pose:
    """The case's similarity transform from template to world mm: ``p_w = R (scale * p_t) + shift``.

    Args:
        rotation: 3 x 3 rotation.
        scale: (3,) scale per template axis.
        shift: (3,) world position of the template origin (mm).
    """

    def __init__(self, rotation: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> None:
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.shift = np.asarray(shift, dtype=np.float64)
        self.mean_scale = float(np.mean(self.scale))

    def points(self, points: Any) -> np.ndarray:
        """Map template points to world.

        Args:
            points: ``(..., 3)`` template points in mm.

        Returns:
            the world points, same shape.
        """
        p = np.asarray(points, dtype=np.float64)
        return (p * self.scale) @ self.rotation.T + self.shift

    def directions(self, directions: np.ndarray) -> np.ndarray:
        """Map template directions to unit world directions.

        Args:
            directions: ``(N, 3)`` template directions.

        Returns:
            ``(N, 3)`` unit vectors.
        """
        d = (np.asarray(directions, dtype=np.float64) * self.scale) @ self.rotation.T
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def template_coordinates(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
        """Map broadcast world axes to full template coordinate arrays.

        Args:
            x: ``(nx, 1, 1)`` world x in mm.
            y: ``(1, ny, 1)`` world y in mm.
            z: ``(1, 1, nz)`` world z in mm.

        Returns:
            the template ``(xt, yt, zt)``, each ``(nx, ny, nz)`` float32.
        """
        r = self.rotation.astype(np.float32)
        d = (x - np.float32(self.shift[0]), y - np.float32(self.shift[1]), z - np.float32(self.shift[2]))
        return tuple((r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2]) / np.float32(self.scale[i]) for i in range(3))

    def ellipsoid(
        self, center: Sequence[float], radii: Sequence[float], local: np.ndarray | None = None, warp: Any = None
    ) -> Ellipsoid:
        """Return a template ellipsoid placed in world (exact for axis-aligned ones, mean scale when rotated).

        Args:
            center: template centre (mm).
            radii: template radii (mm).
            local: the ellipsoid's own rotation in the template, or None.
            warp: an optional :class:`SmoothWarp`.

        Returns:
            the world ellipsoid.
        """
        radii = np.asarray(radii, dtype=np.float64)
        if local is None:
            return Ellipsoid(self.points(center), radii * self.scale, self.rotation, warp=warp)
        return Ellipsoid(self.points(center), radii * self.mean_scale, self.rotation @ local, warp=warp)


class _Composer:
    """Paints static HU and tracks the fraction of each dynamic compartment per voxel (partial volume).

    Painting a fraction ``f`` blends the static image towards the value and every compartment fraction towards 0,
    then adds ``f`` to the painted compartment, so the fractions of a voxel always sum to at most 1.

    Args:
        canvas: the canvas (geometry, and the static image painted in place).
    """

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.maps = np.zeros((_N_COMPARTMENTS, *canvas.shape), dtype=np.float32)

    def paint(self, sl: tuple[slice, ...], frac: np.ndarray, value: Any, compartment: int | None) -> None:
        """Blend a region towards ``value`` by ``frac`` and give it to ``compartment``.

        Args:
            sl: the region's slices.
            frac: the fraction inside, the region's shape.
            value: the static HU (number or array of the region's shape).
            compartment: the compartment index, or None for a static tissue.
        """
        view = self.canvas.image[sl]
        view += frac * (np.float32(value) - view) if np.isscalar(value) else frac * (value - view)
        maps = self.maps[(slice(None), *sl)]
        maps *= 1.0 - frac
        if compartment is not None:
            maps[compartment] += frac

    def paint_sdf(self, sl: tuple[slice, ...], sdf: np.ndarray, value: Any, compartment: int | None) -> None:
        """Paint the inside of a signed distance (mm, negative inside) on a region, with a one-voxel ramp.

        Args:
            sl: the region's slices.
            sdf: the signed distance on the region.
            value: the static HU, or a function of the depth (``-sdf``).
            compartment: the compartment index, or None.
        """
        value = value(-sdf) if callable(value) else value
        self.paint(sl, soft_edge(sdf, self.canvas.edge), value, compartment)

    def paint_shape(self, shape: Shape, value: Any, compartment: int | None, clip: np.ndarray | None = None) -> None:
        """Paint a shape, optionally only inside a full-grid signed distance ``clip``.

        Args:
            shape: the shape.
            value: the static HU, or a function of the depth.
            compartment: the compartment index, or None.
            clip: a full-grid signed distance that bounds the shape (intersection), or None.
        """
        found = self.canvas.fraction(shape)
        if found is None:
            return
        sl, _, sdf = found
        if clip is not None:
            sdf = np.maximum(sdf, clip[sl])
        self.paint_sdf(sl, sdf, value, compartment)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Return the polynomial smooth minimum of two distances (as :class:`~common.phantoms.drawing.Union`).

    Args:
        a: distance.
        b: distance.
        k: smoothness in mm.

    Returns:
        the blended distance.
    """
    h = np.clip(0.5 + 0.5 * (b - a) / np.float32(k), 0.0, 1.0)
    return b * (1 - h) + a * h - np.float32(k) * h * (1 - h)


def _surface_points(shape: Shape, center: np.ndarray, directions: np.ndarray, depth: Any) -> np.ndarray:
    """Find where rays from ``center`` reach ``depth`` mm below a shape's surface (bisection on its distance).

    Args:
        shape: a shape whose ``sdf`` works elementwise (ellipsoids and their unions).
        center: world start of the rays, inside the shape.
        directions: ``(N, 3)`` unit world directions.
        depth: depth below the surface in mm (number or ``(N,)``).

    Returns:
        ``(N, 3)`` world points.
    """
    depth = np.broadcast_to(np.asarray(depth, dtype=np.float64), (len(directions),))
    lo, hi = np.zeros(len(directions)), np.full(len(directions), 250.0)
    for _ in range(36):
        mid = 0.5 * (lo + hi)
        p = (center + mid[:, None] * directions).astype(np.float32)
        inside = shape.sdf(p[:, 0], p[:, 1], p[:, 2]) < -depth
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return center + (0.5 * (lo + hi))[:, None] * directions


def _slerp(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Return ``n`` unit vectors from ``a`` to ``b`` along the great circle.

    Args:
        a: unit start vector.
        b: unit end vector.
        n: number of vectors (>= 2).

    Returns:
        ``(n, 3)`` unit vectors.
    """
    t = np.linspace(0.0, 1.0, n)[:, None]
    v = (1 - t) * a + t * b
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _unit(v: Sequence[float]) -> np.ndarray:
    """Normalise a vector.

    Args:
        v: the vector.

    Returns:
        the unit vector.
    """
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _gamma_variate(t: np.ndarray, t0: float, t_peak: float, alpha: float) -> np.ndarray:
    """Return a gamma-variate bolus of unit peak: ``(s e^(1 - s))^alpha``, ``s = (t - t0) / (t_peak - t0)``.

    Args:
        t: times (s).
        t0: arrival time (s).
        t_peak: time of the peak (s), after ``t0``.
        alpha: shape (larger: narrower).

    Returns:
        the curve at ``t``.
    """
    s = np.clip((t - t0) / (t_peak - t0), 0.0, None)
    return np.where(s > 0, (s * np.exp(1.0 - s)) ** alpha, 0.0)


def _enhancement_curves(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the case's enhancement curves (HU over the unenhanced value) at :data:`FRAME_TIMES_S`.

    The arterial input is a gamma variate plus a smaller, later, wider recirculation; veins are the arterial curve
    convolved with a gamma transit kernel; GM, WM and soft tissue the arterial curve convolved with an exponential
    residue function of their mean transit time (indicator-dilution theory), each scaled to its drawn peak.

    Args:
        rng: the random generator.

    Returns:
        compartment name -> ``(19,)`` enhancement in HU.
    """
    dt = 0.1
    t = np.arange(0.0, 75.0, dt)
    t_peak = 20.0 + rng.uniform(-2.0, 2.0)  # frame 7 +- 1 frame
    rise = rng.uniform(5.0, 8.0)
    alpha = rng.uniform(2.5, 4.0)
    arterial = _gamma_variate(t, t_peak - rise, t_peak, alpha)
    recirculation = rng.uniform(0.15, 0.3) * _gamma_variate(t, t_peak + 4.0, t_peak + 14.0, 2.0)
    arterial = arterial + recirculation

    def convolve(kernel: np.ndarray) -> np.ndarray:
        out = np.convolve(arterial, kernel / kernel.sum())[: t.size]
        return out / out.max()

    venous_delay = rng.uniform(4.5, 6.0)  # mean of the gamma transit kernel (shape 4)
    venous = convolve(t**3 * np.exp(-t / (venous_delay / 4.0)))
    mtt = {"grey_matter": rng.uniform(3.0, 4.5), "white_matter": rng.uniform(4.5, 6.5), "soft_tissue": 25.0}
    residue = {name: np.exp(-t / value) for name, value in mtt.items()}
    shapes = {
        "artery": arterial / arterial.max(),
        "vein": venous,
        **{name: convolve(r) for name, r in residue.items()},
    }
    peaks = {name: rng.uniform(*ENHANCEMENT_RANGES[name]) for name in shapes}
    # grey matter holds two to three times the blood volume of white matter: keep its peak at least twice WM's
    peaks["white_matter"] = min(peaks["white_matter"], peaks["grey_matter"] / 2.0)  # stays within 4-8 HU
    frames = np.asarray(FRAME_TIMES_S)
    return {
        name: np.float32(peaks[name]) * np.interp(frames, t, curve).astype(np.float32) for name, curve in shapes.items()
    }


def _check_kwargs(shape: Any, spacing: Any, motion_mm: Any, n_sections: Any) -> tuple:
    """Check the generator's arguments.

    Args:
        shape: array shape.
        spacing: voxel size in mm.
        motion_mm: largest head translation (mm) and rotation (degrees) between frames.
        n_sections: ``(least, most)`` annotated cross sections per case.

    Returns:
        ``(shape, spacing, motion_mm, (least, most))`` normalised.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """
    if not isinstance(shape, (list, tuple, np.ndarray)) or len(shape) != 3:
        raise ValueError(f"shape={shape!r}; expected three positive integers")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"shape={shape!r}; expected three positive integers")
    if not isinstance(spacing, (list, tuple, np.ndarray)) or len(spacing) != 3:
        raise ValueError(f"spacing={spacing!r}; expected three positive numbers (mm)")
    if not all(isinstance(s, (int, float, np.number)) and math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing={spacing!r}; expected three positive numbers (mm)")
    if isinstance(motion_mm, bool) or not isinstance(motion_mm, (int, float, np.number)):
        raise TypeError(f"motion_mm={motion_mm!r}; expected a number >= 0")
    if not math.isfinite(motion_mm) or motion_mm < 0:
        raise ValueError(f"motion_mm={motion_mm!r}; expected a number >= 0")
    sections = [n_sections] * 2 if isinstance(n_sections, (int, np.integer)) else n_sections
    if not isinstance(sections, (list, tuple)) or len(sections) != 2:
        raise TypeError(f"n_sections={n_sections!r}; expected an integer or a (least, most) pair")
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sections):
        raise TypeError(f"n_sections={n_sections!r}; expected integers")
    if not 1 <= sections[0] <= sections[1] <= 3:
        raise ValueError(f"n_sections={n_sections!r}; expected 1 <= least <= most <= 3 (one plane per axis)")
    return (
        tuple(int(s) for s in shape),
        tuple(float(s) for s in spacing),
        float(motion_mm),
        (int(sections[0]), int(sections[1])),
    )


def _draw_pose(rng: np.random.Generator) -> _Pose:
    """Draw the head's size (+-7 %, +-3 % more per axis), tilt (<= 6 degrees) and position (+-5 mm, +-4 mm in z).

    Args:
        rng: the random generator.

    Returns:
        the pose.
    """
    scale = rng.uniform(0.93, 1.07) * rng.uniform(0.97, 1.03, size=3)
    rotation = random_rotation(rng, 6.0)
    shift = rng.uniform([-5.0, -5.0, -4.0], [5.0, 5.0, 4.0])
    return _Pose(rotation, scale, shift)


def _face_and_neck(rng: np.random.Generator, pose: _Pose, soft_hu: float) -> list[tuple[Shape, float, int | None]]:
    """Draw the face, neck and their contents (static except the soft tissue).

    Args:
        rng: the random generator.
        pose: the case's pose.
        soft_hu: the soft-tissue HU.

    Returns:
        (shape, HU, compartment) in drawing order.
    """
    hu = {name: float(rng.uniform(*HU_RANGES[name])) for name in ("fat", "vitreous", "sinus_air", "vertebra")}
    out: list[tuple[Shape, float, int | None]] = [
        (pose.ellipsoid((0.0, 48.0, -47.0), (58.0, 47.0, 50.0)), soft_hu, _SOFT),
        (pose.ellipsoid((0.0, -12.0, -135.0), (56.0, 62.0, 72.0)), soft_hu, _SOFT),
    ]
    for side in (1.0, -1.0):
        out.append((pose.ellipsoid((side * 31.0, 60.0, -31.0), (16.0, 22.0, 15.0)), hu["fat"], None))
        out.append((pose.ellipsoid((side * 32.0, 70.0, -31.0), (11.5, 11.5, 11.5)), hu["vitreous"], None))
    out.append((pose.ellipsoid((0.0, 62.0, -62.0), (11.0, 22.0, 16.0)), hu["sinus_air"], None))
    out.append((pose.ellipsoid((0.0, 26.0, -58.0), (12.0, 11.0, 9.0)), hu["sinus_air"], None))
    out.append((pose.ellipsoid((0.0, -22.0, -125.0), (17.0, 15.0, 42.0)), hu["vertebra"], None))
    return out


def _sulcal_distance(
    rng: np.random.Generator, pose: _Pose, canvas: Canvas, sl: tuple[slice, ...] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Draw the sulcal sheets: the distance (mm) to the zero set of a random field on the cerebrum's sphere.

    The field depends on the direction from the cerebrum's centre only, so its zero set is a network of sheets
    normal to the brain surface; the distance is estimated as ``|g| / |grad g|``.

    Args:
        rng: the random generator.
        pose: the case's pose.
        canvas: the canvas.
        sl: the region (the cerebrum's box), or None when it misses the grid.

    Returns:
        the unsigned distance to the nearest sheet and a smooth field in [-1, 1] (to vary the sulcal depth) on the
        region, or None when the region is too thin for a gradient.
    """
    n_modes = 16
    wavelength = rng.uniform(24.0, 30.0) * rng.uniform(0.85, 1.15, size=n_modes)
    k = rng.normal(size=(n_modes, 3))
    k *= (2 * np.pi / wavelength / np.linalg.norm(k, axis=1))[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=n_modes)
    k2 = rng.normal(size=(4, 3)) * (2 * np.pi / 90.0)
    phase2 = rng.uniform(0, 2 * np.pi, size=4)
    if sl is None or any(s.stop - s.start < 3 for s in sl):
        return None
    x, y, z = (canvas.axes[i][sl[i]].reshape([-1 if j == i else 1 for j in range(3)]) for i in range(3))
    xt, yt, zt = pose.template_coordinates(x, y, z)
    center, radii = _CEREBRUM
    u = [(c - np.float32(m)) / np.float32(r) for c, m, r in zip((xt, yt, zt), center, radii, strict=True)]
    norm = np.maximum(np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2), np.float32(1e-3))
    q = [np.float32(65.0) * ui / norm for ui in u]
    g = np.zeros(norm.shape, dtype=np.float32)
    for km, pm in zip(k.astype(np.float32), phase.astype(np.float32), strict=True):
        g += np.cos(km[0] * q[0] + km[1] * q[1] + km[2] * q[2] + pm)
    g2 = np.zeros(norm.shape, dtype=np.float32)
    for km, pm in zip(k2.astype(np.float32), phase2.astype(np.float32), strict=True):
        g2 += np.cos(km[0] * q[0] + km[1] * q[1] + km[2] * q[2] + pm)
    grad = np.gradient(g, *canvas.spacing)
    slope = np.sqrt(grad[0] ** 2 + grad[1] ** 2 + grad[2] ** 2)
    return np.abs(g) / np.maximum(slope, np.float32(1e-4)), g2 / np.float32(4.0)


def _vessel(pose: _Pose, rng: np.random.Generator, points: Any, radii: Any, r_min: float, world: bool = False) -> Tube:
    """Build a vessel through template (or world) control points, interior points jittered by 1.5 mm.

    Args:
        pose: the case's pose.
        rng: the random generator.
        points: ``(N, 3)`` control points.
        radii: radius per point (mm).
        r_min: the smallest radius drawn (about half a voxel, so thin vessels stay visible).
        world: whether the points are already in world mm.

    Returns:
        the tube.
    """
    pts = np.asarray(points, dtype=np.float64)
    pts = pts if world else pose.points(pts)
    noise = rng.normal(0.0, 1.5, size=pts.shape)
    noise[[0, -1]] = 0.0
    r = np.maximum(np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),)), r_min)
    return Tube.through(pts + noise, r, samples_per_segment=3)


def _vessels(rng: np.random.Generator, pose: _Pose, cavity: Shape, r_min: float) -> tuple[list[Tube], list[Tube]]:
    """Draw the arterial and venous trees.

    Args:
        rng: the random generator.
        pose: the case's pose.
        cavity: the cranial cavity (elementwise shape) that surface vessels follow.
        r_min: the smallest radius drawn.

    Returns:
        the arteries and the veins.
    """
    center_t, radii_t = np.asarray(_CEREBRUM[0]), np.asarray(_CEREBRUM[1])
    center_w = pose.points(center_t)

    def surface(dirs_t: np.ndarray, depth: Any) -> np.ndarray:
        # template unit directions (ellipsoid-normalised) -> world points ``depth`` mm below the cavity surface
        world_dirs = pose.directions(np.asarray(dirs_t) * radii_t)
        return _surface_points(cavity, center_w, world_dirs, depth)

    def to_dir(p_t: Sequence[float]) -> np.ndarray:
        return _unit((np.asarray(p_t) - center_t) / radii_t)

    arteries: list[Tube] = []
    veins: list[Tube] = []
    vessel = _vessel  # short name for the many calls below

    # Venous sinuses: superior sagittal sinus over the midline to the torcular, transverse and sigmoid sinuses.
    theta = np.deg2rad([12.0, 40.0, 70.0, 100.0, 130.0, 160.0, 190.0, 212.0])
    sss_dirs = np.stack([np.zeros_like(theta), np.cos(theta), np.sin(theta)], axis=1)
    sss_radii = np.linspace(2.5, 4.5, len(theta)) * rng.uniform(0.9, 1.1)
    sss = surface(sss_dirs, sss_radii + 0.3)
    veins.append(vessel(pose, rng, sss, sss_radii, r_min, world=True))
    torcular = sss[-1]
    straight = [torcular, pose.points([0.0, -50.0, -14.0]), pose.points([0.0, -36.0, -4.0])]
    veins.append(vessel(pose, rng, straight, [3.0, 2.5, 2.0], r_min, world=True))
    for side in (1.0, -1.0):
        trans_dirs = np.array([[side * 0.4, -0.92, -0.62], [side * 0.75, -0.6, -0.62], [side * 0.95, -0.2, -0.75]])
        trans = surface(trans_dirs / np.linalg.norm(trans_dirs, axis=1, keepdims=True), 4.3)
        sigmoid = pose.points([[side * 45.0, -36.0, -62.0], [side * 42.0, -27.0, -82.0], [side * 37.0, -20.0, -150.0]])
        path = np.concatenate([[torcular], trans, sigmoid])
        veins.append(vessel(pose, rng, path, [4.0, 4.0, 4.0, 4.5, 5.0, 5.0, 5.0], r_min, world=True))
        icv = [[side * 0.5, -36.0, -4.0], [side * 2.5, -28.0, 2.0], [side * 3.0, -14.0, 12.0], [side * 3.0, 4.0, 14.0]]
        veins.append(vessel(pose, rng, icv, [2.0, 1.3, 1.2, 1.0], r_min))
        # cortical veins draining up to the superior sagittal sinus, and one down to the transverse sinus
        for _ in range(int(rng.integers(5, 9))):
            start = _unit([side * rng.uniform(0.6, 1.0), rng.uniform(-0.9, 0.7), rng.uniform(-0.25, 0.45)])
            end = _unit([side * 0.04, start[1] * 0.8, 1.0])
            r = rng.uniform(1.2, 1.8)
            veins.append(vessel(pose, rng, surface(_slerp(start, end, 6), r + 0.3), r, r_min, world=True))
        labbe = surface(_slerp(_unit([side, 0.1, -0.15]), trans_dirs[2] / np.linalg.norm(trans_dirs[2]), 5), 1.8)
        veins.append(vessel(pose, rng, labbe, 1.4, r_min, world=True))

    # Arteries: carotid and vertebral arteries, basilar, circle of Willis and the cerebral arteries.
    basilar = [[0.0, -8.0, -66.0], [0.0, -6.0, -50.0], [0.0, -6.0, -35.0]]
    arteries.append(vessel(pose, rng, basilar, 1.8, r_min))
    arteries.append(vessel(pose, rng, [[2.0, 24.0, -26.0], [-2.0, 24.0, -26.0]], 0.8, r_min))
    for side in (1.0, -1.0):
        s = np.array([side, 1.0, 1.0])
        ica = np.array([[22, 14, -150], [20, 12, -95], [17, 10, -70], [15, 16, -52], [16, 8, -42], [14, 6, -33]]) * s
        terminus = ica[-1]
        arteries.append(vessel(pose, rng, ica, [2.5, 2.5, 2.4, 2.3, 2.2, 2.0], r_min))
        vertebral = np.array([[12, -22, -150], [10, -18, -95], [5, -13, -78], [1, -8, -66]]) * s
        arteries.append(vessel(pose, rng, vertebral, 1.7, r_min))
        pca = np.array([[0, -6, -35], [8, -8, -33], [18, -20, -28], [24, -42, -18], [20, -62, -8], [14, -78, -2]]) * s
        arteries.append(vessel(pose, rng, pca, [1.6, 1.5, 1.5, 1.4, 1.3, 1.2], r_min))
        arteries.append(vessel(pose, rng, np.array([terminus, [12, -6, -33] * s, pca[1]]), 0.9, r_min))
        mca = np.array([terminus, [26, 9, -30] * s, [37, 7, -24] * s, [42, 4, -16] * s])
        arteries.append(vessel(pose, rng, mca, [1.7, 1.6, 1.5, 1.4], r_min))
        m2_ends = [np.array([48, -12, 10]) * s, np.array([50, -24, -10]) * s]
        for mid, end in zip(([46, -4, -4], [47, -10, -16]), m2_ends, strict=True):
            arteries.append(vessel(pose, rng, np.array([mca[-1], np.array(mid) * s, end]), 1.2, r_min))
        aca = np.array([terminus, [6, 16, -30] * s, [2, 24, -26] * s])
        arteries.append(vessel(pose, rng, aca, 1.2, r_min))
        a2 = [
            [2.5, 24, -26],
            [2.5, 36, -12],
            [2.5, 42, 6],
            [2.5, 36, 24],
            [2.5, 14, 32],
            [2.5, -14, 34],
            [2.5, -36, 26],
        ]
        a2 = np.array(a2) * s
        arteries.append(vessel(pose, rng, a2, np.linspace(1.3, 1.0, len(a2)), r_min))
        # cortical branches over the surface, from the ends of the middle, anterior and posterior cerebral arteries
        branches = []
        for i in range(int(rng.integers(5, 8))):
            target = [side * rng.uniform(0.5, 1.0), rng.uniform(-0.8, 0.8), rng.uniform(-0.3, 0.9)]
            branches.append((m2_ends[i % 2], target))
        for _ in range(3):
            branches.append((a2[int(rng.integers(2, 6))], [side * rng.uniform(0.1, 0.5), rng.uniform(-0.6, 0.8), 1.0]))
        branches += [(pca[-1], [side * rng.uniform(0.2, 0.7), -1.0, rng.uniform(-0.6, 0.1)]) for _ in range(2)]
        for origin, target in branches:
            r = rng.uniform(1.0, 1.4)
            path = surface(_slerp(to_dir(origin), _unit(target), 5)[1:], r + 0.8)
            arteries.append(vessel(pose, rng, np.concatenate([pose.points([origin]), path]), r, r_min, world=True))
    return arteries, veins


def _annotate_sections(
    rng: np.random.Generator, region: np.ndarray, dense: np.ndarray, least: int, most: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Cut the dense label to ``least``-``most`` random orthogonal cross sections, as the paper's annotators did.

    Each section's axis is drawn among the axes not used yet, its index among the planes where the annotation
    region covers at least 10 % of the plane (Sec. III-C); inside the region the plane gets the dense label.

    Args:
        rng: the random generator.
        region: bool ``[X, Y, Z]``, where annotations may be.
        dense: the dense label.
        least: the fewest sections.
        most: the most sections (<= 3).

    Returns:
        the sparse label (0 elsewhere) and the ``(axis, index)`` of each section.
    """
    n = int(rng.integers(least, most + 1))
    sections = []
    label = np.zeros(dense.shape, dtype=np.uint8)
    for axis in rng.permutation(3)[:n]:
        coverage = region.mean(axis=tuple(a for a in range(3) if a != axis))
        candidates = np.flatnonzero(coverage >= 0.10)
        if candidates.size == 0:
            candidates = np.array([int(coverage.argmax())])
        index = int(candidates[rng.integers(candidates.size)])
        sections.append((int(axis), index))
        plane = tuple(index if a == axis else slice(None) for a in range(3))
        label[plane] = np.where(region[plane], dense[plane], 0)
    return label, sections


def _render_frames(
    rng: np.random.Generator,
    image: np.ndarray,
    maps: np.ndarray,
    spacing: Sequence[float],
    motion_mm: float,
    center: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, list]:
    """Render the 19 frames: static image plus each compartment's fraction times its enhancement, motion, noise.

    Args:
        rng: the random generator.
        image: the static (unenhanced, noise-free) image, float32 ``[X, Y, Z]``.
        maps: the compartment fractions, ``[6, X, Y, Z]``.
        spacing: voxel size in mm.
        motion_mm: largest motion of frames ``t > 0`` (mm and degrees).
        center: world centre of the head's rotation.

    Returns:
        the int16 image ``[X, Y, Z, 19]``, the enhancement curves, the noise sigma per frame and the motion of
        frames 1-18 as ``(rotation, translation)``.
    """
    curves = _enhancement_curves(rng)
    enhancing = {_SOFT: "soft_tissue", _WM: "white_matter", _GM: "grey_matter", _ARTERY: "artery", _VEIN: "vein"}
    frames = np.empty((N_TIME_POINTS, *image.shape), dtype=np.float32)
    for t in range(N_TIME_POINTS):
        frame = frames[t]
        frame[...] = image
        for index, name in enhancing.items():
            frame += maps[index] * curves[name][t]
    motion = []
    for t in range(1, N_TIME_POINTS):
        # drawn even without motion, so that motion_mm changes nothing else of the case
        rotation = random_rotation(rng, motion_mm)
        direction = rng.normal(size=3)
        translation = direction / np.linalg.norm(direction) * rng.uniform(0.0, motion_mm)
        motion.append((rotation, translation))
        if motion_mm > 0:
            frames[t] = rigidly_move_volume(frames[t], spacing, rotation, translation, center, AIR_HU)
    noise_sigma = rng.uniform(*NOISE_SIGMA_RANGE) / np.sqrt(np.asarray(EXPOSURES))
    for t in range(N_TIME_POINTS):
        frames[t] += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sigma[t])
    np.clip(frames, *HU_CLIP, out=frames)
    out = np.ascontiguousarray(np.moveaxis(np.rint(frames, out=frames).astype(np.int16), 0, -1))
    return out, curves, noise_sigma, motion


def generate_brain_ctp_dense(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    motion_mm: float = 0.0,
    n_sections: Sequence[int] | int = (1, 3),
    exclude_posterior_fossa: bool = True,
) -> dict[str, Any]:
    """Generate one synthetic 4D CT perfusion case with its dense ground truth (for tests and figures).

    Stand-in for the data of van de Leemput et al. (2019), Sec. III (see the module docstring). Draws exactly
    what :func:`generate_brain_ctp` draws (same ``rng`` use), so the ``image``, ``label`` and ``mask`` entries equal
    that function's output for the same generator state.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(96, 112, 96)``.
        spacing: voxel size in mm; default 2 mm (a 192 x 224 x 192 mm field of view round a head of about
            160 x 200 x 175 mm).
        motion_mm: largest rigid head motion of frames ``t > 0`` relative to ``t = 0``: translation up to this
            many mm and rotation up to this many degrees (0: no motion). The label and mask are in frame 0.
        n_sections: ``(least, most)`` annotated cross sections per case (or one number), at most one per axis.
        exclude_posterior_fossa: leave the cerebellum and brain stem below the tentorium unannotated (Sec. III-C).

    Returns:
        a dict with ``image`` int16 ``[X, Y, Z, 19]`` (HU), ``label`` uint8 ``[X, Y, Z]`` (sparse, 0 = not
        annotated), ``mask`` uint8 ``[X, Y, Z]`` (cranial cavity), and the ground truth: ``dense_label`` uint8
        (every cranial-cavity voxel labelled 1-4), ``artery`` and ``vein`` (bool, the vessel voxels of each tree),
        ``purity`` (float32, the dominant compartment's fraction per voxel), ``annotation_region`` (bool),
        ``sections`` (list of ``(axis, index)``), ``frame_times`` (s), ``curves`` (compartment -> ``(19,)`` HU
        enhancement), ``noise_sigma`` (``(19,)`` HU), ``hu`` (unenhanced HU per tissue), ``motion`` (frames 1-18:
        ``(rotation, translation)`` as passed to :func:`rigidly_move_volume`) and ``motion_center`` (its centre).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    shape, spacing, motion_mm, (least, most) = _check_kwargs(shape, spacing, motion_mm, n_sections)
    if not isinstance(exclude_posterior_fossa, (bool, np.bool_)):
        raise TypeError(f"exclude_posterior_fossa={exclude_posterior_fossa!r}; expected True or False")
    canvas = Canvas(shape, spacing, background=AIR_HU)
    comp = _Composer(canvas)
    edge = canvas.edge
    pose = _draw_pose(rng)
    mm = pose.mean_scale

    # Unenhanced HU (GM = WM + a 5-8 HU gap, within 33-38 HU).
    hu = {name: float(rng.uniform(*HU_RANGES[name])) for name in ("white_matter", "csf", "blood", "soft_tissue")}
    hu["grey_matter"] = float(np.clip(hu["white_matter"] + rng.uniform(*HU_RANGES["gm_wm_gap"]), 33.0, 38.0))
    bone = rim_profile(rng.uniform(*HU_RANGES["diploe"]), rng.uniform(*HU_RANGES["cortical_bone"]), 1.5, 1.0)
    t_skull, t_scalp = rng.uniform(5.0, 8.0), rng.uniform(4.0, 7.0)
    rim, gap = rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.0)  # subarachnoid space, tentorium
    cortex, sulcus_half, sulcus_depth = rng.uniform(3.0, 4.0), rng.uniform(0.9, 1.6), rng.uniform(12.0, 18.0)

    # Full-grid distances: cerebrum (smoothly deformed), posterior fossa, brain stem; the cranial cavity.
    axes = (canvas.axes[0][:, None, None], canvas.axes[1][None, :, None], canvas.axes[2][None, None, :])
    cerebrum = pose.ellipsoid(*_CEREBRUM, warp=SmoothWarp(rng, 4.0, 110.0))
    fossa = pose.ellipsoid(*_FOSSA, warp=SmoothWarp(rng, 2.5, 80.0))
    stem_points, stem_radii = pose.points(_STEM[0]), _STEM[1] * mm
    d_cer = np.broadcast_to(cerebrum.sdf(*axes), shape)
    d_fos = np.broadcast_to(fossa.sdf(*axes), shape)
    d_cistern = Tube(stem_points, stem_radii + 4.0).sdf(*axes)  # brain stem and the cisterns round it
    cavity = _smin(_smin(d_cer, d_fos, 8.0), d_cistern, 4.0)
    xt, yt, zt = pose.template_coordinates(*axes)
    tent = _TENTORIUM
    z_tent = tent["apex_z"] + tent["slope_y"] * (yt - tent["apex_y"]) - tent["slope_x"] * np.abs(xt)
    infra = np.maximum(zt - z_tent, yt - tent["front_y"]) * np.float32(mm)  # < 0 below the tentorium
    above_foramen = zt > _FORAMEN_MAGNUM_Z
    full = (slice(None),) * 3

    # Head: soft tissue, face and neck, skull.
    head = cavity - np.float32(t_skull + t_scalp)
    comp.paint_sdf(full, head, hu["soft_tissue"], _SOFT)
    for shape_, value, compartment in _face_and_neck(rng, pose, hu["soft_tissue"]):
        comp.paint_shape(shape_, value, compartment)
    skull_depth = np.minimum(np.float32(t_skull) - cavity, np.maximum(cavity, 0.0))
    comp.paint(full, soft_edge(cavity - np.float32(t_skull), edge), bone(skull_depth), None)

    # Cranial cavity (CSF), supratentorial brain (GM ribbon, sulci, WM), cerebellum.
    comp.paint_sdf(full, cavity, hu["csf"], _CSF)
    d_brain = np.minimum(d_cer, d_fos) + np.float32(rim)
    d_sup = np.maximum(d_brain, np.float32(gap / 2) - infra)
    comp.paint_sdf(full, d_sup, hu["grey_matter"], _GM)
    found = canvas.region(*cerebrum.bounds())
    sulci = _sulcal_distance(rng, pose, canvas, None if found is None else found[0])
    if found is not None and sulci is not None:
        sl = found[0]
        dist, vary = sulci
        depth = -d_sup[sl]
        d_sulcus = np.float32(sulcus_depth) * (1.0 + np.float32(0.3) * vary)
        d_wm = np.maximum(cortex - depth, np.minimum(sulcus_half + cortex - dist, d_sulcus + cortex - depth))
        comp.paint_sdf(sl, d_wm, hu["white_matter"], _WM)
        comp.paint_sdf(sl, np.maximum(np.maximum(dist - sulcus_half, depth - d_sulcus), cavity[sl]), hu["csf"], _CSF)
    else:
        comp.paint_sdf(full, d_sup + np.float32(cortex), hu["white_matter"], _WM)
    d_cbl = np.maximum(d_brain, infra + np.float32(gap / 2))
    comp.paint_sdf(full, d_cbl, hu["grey_matter"], _GM)
    comp.paint_sdf(full, d_cbl + np.float32(rng.uniform(6.0, 9.0)), hu["white_matter"], _WM)

    # Deep grey matter, fissures, ventricles, brain stem.
    for side in (1.0, -1.0):
        for center, radii in (((15, 16, 16), (6, 11, 9)), ((27, 3, 2), (6, 14, 9)), ((10, -14, 6), (9, 14, 9))):
            jitter = rng.normal(0.0, 1.5, size=3)
            nucleus = pose.ellipsoid(np.array(center) * [side, 1, 1] + jitter, np.array(radii) * rng.uniform(0.9, 1.1))
            comp.paint_shape(nucleus, hu["grey_matter"], _GM, clip=d_sup)
    for side in (1.0, -1.0):
        tilt = rotation_matrix((rng.uniform(-20.0, -10.0), 0.0, side * rng.uniform(0.0, 10.0)))
        center, radii = np.array([side * 45.0, 0.0, -8.0]), np.array([rng.uniform(2.0, 3.5), 24.0, 5.0])
        comp.paint_shape(pose.ellipsoid(center, radii + cortex, tilt), hu["grey_matter"], _GM, clip=d_sup)
        comp.paint_shape(pose.ellipsoid(center, radii, tilt), hu["csf"], _CSF, clip=cavity)
    fissure_half = rng.uniform(1.0, 2.0)
    core = (
        np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip((xt, yt, zt), *_CORE, strict=True))) - np.float32(1.0)
    ) * np.float32(_CORE[1][1] * mm)
    midline = np.abs(xt) * np.float32(pose.scale[0])
    comp.paint_sdf(
        full, np.maximum(np.maximum(midline - (fissure_half + cortex), -core), d_sup), hu["grey_matter"], _GM
    )
    comp.paint_sdf(full, np.maximum(np.maximum(midline - fissure_half, -core), d_sup - rim), hu["csf"], _CSF)
    # Dura (soft tissue, left out of the annotations): the falx in the fissure, the tentorium over the cerebellum.
    dura_half = np.float32(0.5 * rng.uniform(0.8, 1.4))
    falx = np.maximum(np.maximum(midline - dura_half, -core), np.maximum(-infra, (-20.0 - zt) * np.float32(mm)))
    comp.paint_sdf(full, np.maximum(falx, cavity), hu["soft_tissue"], _SOFT)
    tentorium = np.maximum(np.abs(zt - z_tent) * np.float32(mm) - dura_half, (yt - tent["front_y"]) * np.float32(mm))
    comp.paint_sdf(full, np.maximum(tentorium, cavity), hu["soft_tissue"], _SOFT)
    ventricle_scale = rng.uniform(0.8, 1.5)
    for side in (1.0, -1.0):
        s = np.array([side, 1.0, 1.0])
        body = np.array([[10, 30, 12], [12, 18, 18], [14, 0, 22], [17, -20, 18], [22, -30, 8], [17, -48, 6]]) * s
        temporal = np.array([[22, -30, 8], [30, -22, -8], [33, -5, -20], [32, 8, -24]]) * s
        for points, radii in ((body, [4.0, 6.0, 5.0, 5.0, 7.0, 3.0]), (temporal, [5.0, 3.5, 3.0, 2.5])):
            tube = _vessel(pose, rng, points, np.array(radii) * ventricle_scale * mm, 0.0)
            comp.paint_shape(tube, hu["csf"], _CSF, clip=cavity)
    third = pose.ellipsoid((0.0, -6.0, 4.0), (2.5 * ventricle_scale, 14.0, 9.0))
    comp.paint_shape(third, hu["csf"], _CSF)
    comp.paint_shape(Tube.through(stem_points, stem_radii), hu["white_matter"], _WM)
    comp.paint_shape(pose.ellipsoid((0.0, -40.0, -45.0), (7.0, 4.0, 8.0)), hu["csf"], _CSF)

    # Vessels: veins, then arteries.
    r_min = 0.6 * float(np.mean(spacing))
    arteries, veins = _vessels(rng, pose, Union([cerebrum, fossa], smoothness=8.0), r_min)
    for tube in veins:
        comp.paint_shape(tube, hu["blood"], _VEIN)
    for tube in arteries:
        comp.paint_shape(tube, hu["blood"], _ARTERY)

    # Smooth non-uniformity (static), then the ground truth from the compartment fractions.
    canvas.image += smooth_random_field(rng, shape, spacing, correlation=50.0, std=float(rng.uniform(1.0, 2.0)))
    maps = comp.maps
    mask = (cavity <= 0) & above_foramen
    tissue = np.stack([maps[_CSF], maps[_WM], maps[_GM], maps[_ARTERY] + maps[_VEIN]])
    dense = np.where(mask, tissue.argmax(axis=0) + 1, 0).astype(np.uint8)
    purity = np.where(mask, tissue.max(axis=0), 0.0).astype(np.float32)
    region = mask & (maps[_SOFT] < 0.25)  # without the falx and tentorium (Sec. III-C)
    if exclude_posterior_fossa:
        region &= (infra > 0) & ((d_cistern > 0) | (zt > tent["apex_z"]))  # the posterior fossa's contents

    label, sections = _annotate_sections(rng, region, dense, least, most)
    image, curves, noise_sigma, motion = _render_frames(rng, canvas.image, maps, spacing, motion_mm, pose.shift)
    logger.debug("brain CTP phantom: shape %s, spacing %s, sections %s", shape, spacing, sections)
    vessel = dense == 4
    return {
        "image": image,
        "label": label,
        "mask": mask.astype(np.uint8),
        "dense_label": dense,
        "artery": vessel & (maps[_ARTERY] >= maps[_VEIN]),
        "vein": vessel & (maps[_VEIN] > maps[_ARTERY]),
        "purity": purity,
        "annotation_region": region,
        "sections": sections,
        "frame_times": np.asarray(FRAME_TIMES_S),
        "curves": curves,
        "noise_sigma": noise_sigma,
        "hu": hu,
        "motion": motion,
        "motion_center": pose.shift.copy(),
    }


def generate_brain_ctp(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    motion_mm: float = 0.0,
    n_sections: Sequence[int] | int = (1, 3),
    exclude_posterior_fossa: bool = True,
) -> dict[str, np.ndarray]:
    """Generate one synthetic 4D CT perfusion case: 19 frames, sparse 2D tissue annotations, cranial-cavity mask.

    Stand-in for the data of van de Leemput et al. (2019), Sec. III; the phantom generator of the task
    ``brain_ctp_tissue``. :func:`generate_brain_ctp_dense` gives the same case with its dense ground truth.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(96, 112, 96)``.
        spacing: voxel size in mm; default ``(2, 2, 2)``.
        motion_mm: largest rigid head motion of frames ``t > 0`` (mm and degrees); 0 for none.
        n_sections: ``(least, most)`` annotated cross sections per case, at most one per axis.
        exclude_posterior_fossa: leave the cerebellum and brain stem below the tentorium unannotated.

    Returns:
        ``image`` int16 ``[X, Y, Z, 19]`` (HU, time points as channels), ``label`` uint8 ``[X, Y, Z]`` with values
        :data:`BRAIN_CTP_LABELS` (0 = not annotated) on 1-3 axis-aligned planes, and ``mask`` uint8 ``[X, Y, Z]``
        (1 in the cranial cavity), all with affine ``centered_affine(shape, spacing)`` (RAS+).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    case = generate_brain_ctp_dense(rng, shape, spacing, motion_mm, n_sections, exclude_posterior_fossa)
    return {"image": case["image"], "label": case["label"], "mask": case["mask"]}


def rigidly_move_volume(
    volume: np.ndarray,
    spacing: Sequence[float],
    rotation: np.ndarray,
    translation: Sequence[float],
    center: Sequence[float] = (0.0, 0.0, 0.0),
    fill: float = 0.0,
) -> np.ndarray:
    """Move the content of a volume rigidly (trilinear resampling with ``torch.nn.functional.grid_sample``).

    Simulates head motion between the time points of a 4D CT (van de Leemput et al. 2019, Sec. III-B registers
    it away): a point at world ``p`` moves to ``R (p - center) + center + translation``. World coordinates are
    those of :func:`~common.phantoms.drawing.centered_affine` (the volume's centre at 0). Computed in float32 on
    the CPU (the phantoms are numpy arrays).

    Args:
        volume: ``[X, Y, Z]`` array.
        spacing: voxel size in mm.
        rotation: 3 x 3 rotation matrix.
        translation: (3,) translation in mm.
        center: the world centre of the rotation (mm).
        fill: the value for voxels moved in from outside the volume.

    Returns:
        the moved volume, float32 ``[X, Y, Z]``.

    Raises:
        ValueError: ``volume`` is not 3D, or ``rotation`` is not 3 x 3.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume of shape {volume.shape}; expected [X, Y, Z]")
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation of shape {rot.shape}; expected 3 x 3")
    n = np.asarray(volume.shape, dtype=np.float64)
    h = np.asarray(spacing, dtype=np.float64) * np.maximum(n - 1.0, 1.0) / 2.0  # mm per normalised unit
    # output normalised coords m -> world p = h m (centred) -> source q = R^T (p - c - d) + c -> normalised q / h
    a = (rot.T * h[None, :]) / h[:, None]
    b = (rot.T @ (-np.asarray(center) - np.asarray(translation)) + np.asarray(center)) / h
    perm = [2, 1, 0]  # grid_sample's (x, y, z) index the last, middle and first array axes
    theta = np.concatenate([a[np.ix_(perm, perm)], b[perm][:, None]], axis=1)
    src = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None] - fill
    grid = torch.nn.functional.affine_grid(
        torch.as_tensor(theta, dtype=src.dtype)[None], list(src.shape), align_corners=True
    )
    moved = torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return (moved[0, 0] + fill).numpy()


#: The task this module declares (found by :data:`common.phantoms.registry.PHANTOM_TASKS`).
PHANTOM_TASK = PhantomTask(
    name="brain_ctp_tissue",
    generator=generate_brain_ctp,
    labels=BRAIN_CTP_LABELS,
    modality={str(t): f"CT t{t}" for t in range(N_TIME_POINTS)},
    description=(
        "Synthetic 4D CT perfusion phantom of the head (19 time points as channels, HU) with CSF, white matter, "
        "grey matter and vessel labels on 1-3 sparse orthogonal cross sections and a cranial-cavity mask, standing "
        "in for the data of van de Leemput et al. 2019 (IEEE Access), Sec. III"
    ),
    dicom_modality="CT",
    defaults={
        "shape": list(DEFAULT_SHAPE),
        "spacing": [float(s) for s in DEFAULT_SPACING],
        "motion_mm": 0.0,
        "n_sections": [1, 3],
        "exclude_posterior_fossa": True,
    },
    version=1,
    n_channels=N_TIME_POINTS,
    channel_layout="last",
    ignore_value=0,
    masks={"mask": "cranial cavity"},
)
