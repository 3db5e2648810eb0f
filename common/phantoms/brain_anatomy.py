"""Template anatomy of the brain CT perfusion phantom: head pose, compartments, face, sulci and vessel trees.

The drawing half of :mod:`common.phantoms.brain_ctp` (the phantom standing in for the data of van de Leemput et
al. 2019, Sec. III; see that module for the whole design): the unenhanced HU of each tissue, the template head
(cerebrum, posterior fossa, brain stem, tentorium; mm, head upright, centred on the volume), the case's pose, a
painter that tracks the fraction of each contrast-enhancing compartment per voxel (partial volume), the face and
neck, the sulcal field folding the cortex, and the arterial and venous trees. :mod:`common.phantoms.brain_ctp`
draws a case with these pieces and adds the contrast passage, motion, noise and the sparse annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from common.phantoms.drawing import (
    Canvas,
    Ellipsoid,
    Shape,
    Tube,
    random_rotation,
    soft_edge,
)

__all__ = [
    "HU_RANGES",
    "SOFT",
    "CSF",
    "WM",
    "GM",
    "ARTERY",
    "VEIN",
    "N_COMPARTMENTS",
    "Pose",
    "Composer",
    "draw_pose",
    "face_and_neck",
    "sulcal_distance",
    "smooth_min",
    "surface_points",
    "vessel_tube",
    "vessel_trees",
]

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

# Compartments whose fraction is tracked per voxel (enhancement and labels); everything else is static.
SOFT, CSF, WM, GM, ARTERY, VEIN = range(6)
N_COMPARTMENTS = 6

# Template anatomy (mm, head upright, centred on the volume): cerebrum and posterior-fossa ellipsoids, brain stem.
CEREBRUM = ((0.0, -2.0, 7.0), (66.0, 82.0, 60.0))
FOSSA = ((0.0, -47.0, -45.0), (54.0, 36.0, 30.0))
STEM = (
    np.array([[0.0, -16.0, -17.0], [0.0, -22.0, -45.0], [0.0, -28.0, -67.0], [0.0, -30.0, -85.0], [0, -31, -150]]),
    np.array([12.0, 13.0, 9.0, 8.0, 8.0]),
)
FORAMEN_MAGNUM_Z = -80.0
TENTORIUM = {"apex_y": -18.0, "apex_z": -16.0, "slope_y": 0.28, "slope_x": 0.3, "front_y": -22.0}
# The deep core kept out of the interhemispheric fissure: corpus callosum, thalami, third ventricle, midbrain.
CORE = ((0.0, -4.0, -2.0), (100.0, 42.0, 26.0))


class Pose:
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


class Composer:
    """Paints static HU and tracks the fraction of each dynamic compartment per voxel (partial volume).

    Painting a fraction ``f`` blends the static image towards the value and every compartment fraction towards 0,
    then adds ``f`` to the painted compartment, so the fractions of a voxel always sum to at most 1.

    Args:
        canvas: the canvas (geometry, and the static image painted in place).
    """

    def __init__(self, canvas: Canvas) -> None:
        self.canvas = canvas
        self.maps = np.zeros((N_COMPARTMENTS, *canvas.shape), dtype=np.float32)

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


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
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


def surface_points(shape: Shape, center: np.ndarray, directions: np.ndarray, depth: Any) -> np.ndarray:
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


def slerp(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
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


def unit(v: Sequence[float]) -> np.ndarray:
    """Normalise a vector.

    Args:
        v: the vector.

    Returns:
        the unit vector.
    """
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def draw_pose(rng: np.random.Generator) -> Pose:
    """Draw the head's size (+-7 %, +-3 % more per axis), tilt (<= 6 degrees) and position (+-5 mm, +-4 mm in z).

    Args:
        rng: the random generator.

    Returns:
        the pose.
    """
    scale = rng.uniform(0.93, 1.07) * rng.uniform(0.97, 1.03, size=3)
    rotation = random_rotation(rng, 6.0)
    shift = rng.uniform([-5.0, -5.0, -4.0], [5.0, 5.0, 4.0])
    return Pose(rotation, scale, shift)


def face_and_neck(rng: np.random.Generator, pose: Pose, soft_hu: float) -> list[tuple[Shape, float, int | None]]:
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
        (pose.ellipsoid((0.0, 48.0, -47.0), (58.0, 47.0, 50.0)), soft_hu, SOFT),
        (pose.ellipsoid((0.0, -12.0, -135.0), (56.0, 62.0, 72.0)), soft_hu, SOFT),
    ]
    for side in (1.0, -1.0):
        out.append((pose.ellipsoid((side * 31.0, 60.0, -31.0), (16.0, 22.0, 15.0)), hu["fat"], None))
        out.append((pose.ellipsoid((side * 32.0, 70.0, -31.0), (11.5, 11.5, 11.5)), hu["vitreous"], None))
    out.append((pose.ellipsoid((0.0, 62.0, -62.0), (11.0, 22.0, 16.0)), hu["sinus_air"], None))
    out.append((pose.ellipsoid((0.0, 26.0, -58.0), (12.0, 11.0, 9.0)), hu["sinus_air"], None))
    out.append((pose.ellipsoid((0.0, -22.0, -125.0), (17.0, 15.0, 42.0)), hu["vertebra"], None))
    return out


def sulcal_distance(
    rng: np.random.Generator, pose: Pose, canvas: Canvas, sl: tuple[slice, ...] | None
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
    center, radii = CEREBRUM
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


def vessel_tube(
    pose: Pose, rng: np.random.Generator, points: Any, radii: Any, r_min: float, world: bool = False
) -> Tube:
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


def vessel_trees(rng: np.random.Generator, pose: Pose, cavity: Shape, r_min: float) -> tuple[list[Tube], list[Tube]]:
    """Draw the arterial and venous trees.

    Args:
        rng: the random generator.
        pose: the case's pose.
        cavity: the cranial cavity (elementwise shape) that surface vessels follow.
        r_min: the smallest radius drawn.

    Returns:
        the arteries and the veins.
    """
    center_t, radii_t = np.asarray(CEREBRUM[0]), np.asarray(CEREBRUM[1])
    center_w = pose.points(center_t)

    def surface(dirs_t: np.ndarray, depth: Any) -> np.ndarray:
        # template unit directions (ellipsoid-normalised) -> world points ``depth`` mm below the cavity surface
        world_dirs = pose.directions(np.asarray(dirs_t) * radii_t)
        return surface_points(cavity, center_w, world_dirs, depth)

    def to_dir(p_t: Sequence[float]) -> np.ndarray:
        return unit((np.asarray(p_t) - center_t) / radii_t)

    arteries: list[Tube] = []
    veins: list[Tube] = []
    vessel = vessel_tube  # short name for the many calls below

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
            start = unit([side * rng.uniform(0.6, 1.0), rng.uniform(-0.9, 0.7), rng.uniform(-0.25, 0.45)])
            end = unit([side * 0.04, start[1] * 0.8, 1.0])
            r = rng.uniform(1.2, 1.8)
            veins.append(vessel(pose, rng, surface(slerp(start, end, 6), r + 0.3), r, r_min, world=True))
        labbe = surface(slerp(unit([side, 0.1, -0.15]), trans_dirs[2] / np.linalg.norm(trans_dirs[2]), 5), 1.8)
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
            path = surface(slerp(to_dir(origin), unit(target), 5)[1:], r + 0.8)
            arteries.append(vessel(pose, rng, np.concatenate([pose.points([origin]), path]), r, r_min, world=True))
    return arteries, veins
