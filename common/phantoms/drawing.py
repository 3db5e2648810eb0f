"""Soft-shape drawing helpers shared by the phantom generators.

Shapes are defined in millimetres in a world frame, as approximate signed distance functions (SDF, negative
inside), so a phantom renders the same anatomy at any array shape and spacing. A :class:`Canvas` holds the image
and label arrays and paints each shape with partial volume: the fraction of a voxel inside a shape is a smooth
ramp of the signed distance over about one voxel (:func:`soft_edge`), the image is blended towards the shape's
value by that fraction, and the label is set where the fraction is at least one half. Later shapes overwrite
earlier ones, so drawing in a fixed priority order keeps labels disjoint.

Coordinates: the canvas axes are the array axes; with the default origin (:func:`centered_affine`) voxel ``(i, j,
k)`` sits at ``origin + (i, j, k) * spacing`` mm and the volume's centre is at world ``(0, 0, 0)``. Generators
that write NIfTI use the RAS+ convention (``+x`` towards the patient's right, ``+y`` anterior, ``+z`` superior),
but nothing here depends on it.

Every shape evaluates its SDF on broadcast axis arrays ``x`` of shape ``(nx, 1, 1)``, ``y`` ``(1, ny, 1)`` and
``z`` ``(1, 1, nz)`` (ascending mm coordinates of a box of voxels), and returns an array broadcastable to
``(nx, ny, nz)``. Only the box around each shape's bounds is evaluated, which keeps a 256 x 256 x 120 phantom of
some fifty shapes to about a second on one core.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Canvas",
    "Painter",
    "Shape",
    "Ellipsoid",
    "Tube",
    "HalfSpace",
    "Union",
    "Intersection",
    "Difference",
    "SmoothWarp",
    "centered_affine",
    "check_grid",
    "soft_edge",
    "rim_profile",
    "smooth_polyline",
    "rotation_matrix",
    "random_rotation",
    "smooth_random_field",
]

Axes = tuple[np.ndarray, np.ndarray, np.ndarray]


def check_grid(shape: Any, spacing: Any) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Check a generator's ``shape`` and ``spacing`` arguments (three positive integers, three positive mm).

    Args:
        shape: array shape.
        spacing: voxel size in mm.

    Returns:
        ``(shape, spacing)`` as tuples of ints and floats.

    Raises:
        ValueError: not three positive integers, or not three positive finite numbers (bools refused in both).
    """
    if not isinstance(shape, (list, tuple, np.ndarray)) or len(shape) != 3:
        raise ValueError(f"shape={shape!r}; expected three positive integers")
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, (bool, np.bool_)) and s > 0 for s in shape):
        raise ValueError(f"shape={shape!r}; expected three positive integers")
    if not isinstance(spacing, (list, tuple, np.ndarray)) or len(spacing) != 3:
        raise ValueError(f"spacing={spacing!r}; expected three positive numbers (mm)")
    if not all(
        isinstance(s, (int, float, np.integer, np.floating)) and not isinstance(s, (bool, np.bool_)) for s in spacing
    ) or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing={spacing!r}; expected three positive numbers (mm)")
    return tuple(int(s) for s in shape), tuple(float(s) for s in spacing)  # type: ignore[return-value]


def centered_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """Return the 4 x 4 affine ``diag(spacing)`` whose origin puts the volume's centre at world ``(0, 0, 0)``.

    Args:
        shape: the array shape ``(nx, ny, nz)``.
        spacing: the voxel size in mm along each array axis.
    """
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    affine = np.diag([*spacing_arr, 1.0])
    affine[:3, 3] = -(np.asarray(shape, dtype=np.float64) - 1.0) / 2.0 * spacing_arr
    return affine


def soft_edge(sdf: np.ndarray, width: float) -> np.ndarray:
    """Return the partial-volume fraction inside a shape from its signed distance (mm, negative inside).

    A smoothstep of the linear ramp ``0.5 - sdf / width``: 1 deep inside, 0 outside, 0.5 on the surface, over a
    band of ``width`` mm (about one voxel), approximating a box point-spread function across a planar edge.

    Args:
        sdf: signed distance in mm, any shape.
        width: width of the transition in mm.
    """
    t = np.clip(0.5 - sdf / np.float32(width), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def rim_profile(inner: float, rim: float, thickness: float, width: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """Return a value function of depth (mm below the surface): ``rim`` within ``thickness`` of it, else ``inner``.

    Used for a cortical bone rim, a kidney cortex or an enhancing stomach wall; pass it as ``value`` to
    :meth:`Canvas.draw`.

    Args:
        inner: value deep inside.
        rim: value near the surface.
        thickness: rim thickness in mm.
        width: softness of the rim's inner edge in mm.
    """

    def value(depth: np.ndarray) -> np.ndarray:
        w = soft_edge(depth - np.float32(thickness), width)
        return np.float32(inner) + np.float32(rim - inner) * w

    return value


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Return the 3 x 3 rotation ``Rz @ Ry @ Rx`` for rotations (degrees) about the x, y and z axes."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Return a rotation by a uniform angle in ``[-max_deg, max_deg]`` about a uniformly random axis."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def smooth_polyline(points: np.ndarray, samples_per_segment: int = 6) -> np.ndarray:
    """Return a Catmull-Rom spline through control points, densely sampled.

    Args:
        points: ``(N, D)`` control points (N >= 2); the curve passes through each.
        samples_per_segment: samples per span between two control points.

    Returns:
        ``((N - 1) * samples_per_segment + 1, D)`` points, first and last equal to the control points'.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.shape[0] < 3:
        t = np.linspace(0.0, 1.0, (p.shape[0] - 1) * samples_per_segment + 1)[:, None]
        return p[0] + t * (p[-1] - p[0])
    ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    t = np.linspace(0.0, 1.0, samples_per_segment, endpoint=False)[:, None]
    out = []
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        out.append(
            0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (3 * p1 - p0 - 3 * p2 + p3) * t**3)
        )
    out.append(p[-1:])
    return np.concatenate(out)


class SmoothWarp:
    """A random smooth displacement field: a sum of a few plane sinusoids with random directions and phases.

    ``warp(x, y, z)`` returns the displaced coordinates ``p + d(p)``; a shape evaluated there is deformed
    smoothly. With ``wavelength`` >= 4 pi ``amplitude`` the map stays one-to-one.

    Args:
        rng: the random generator (draws ``7 * n_modes`` numbers).
        amplitude: the largest displacement in mm (the sum of the modes' amplitudes).
        wavelength: the mean wavelength in mm (each mode draws within +-30 %).
        n_modes: the number of sinusoids.
    """

    def __init__(self, rng: np.random.Generator, amplitude: float, wavelength: float, n_modes: int = 3) -> None:
        directions = rng.normal(size=(n_modes, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = wavelength * rng.uniform(0.7, 1.3, size=n_modes)
        self.frequencies = (2 * np.pi / lengths)[:, None] * directions
        self.phases = rng.uniform(0.0, 2 * np.pi, size=n_modes)
        vectors = rng.normal(size=(n_modes, 3))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = vectors * (amplitude / n_modes)
        self.amplitude = float(amplitude)

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Axes:
        """Displace world coordinates.

        Args:
            x: x coordinates in mm (any shape broadcastable with ``y`` and ``z``).
            y: y coordinates in mm.
            z: z coordinates in mm.

        Returns:
            the displaced coordinates ``(x, y, z) + d(x, y, z)``.
        """
        xs, ys, zs = x, y, z
        for f, phase, v in zip(self.frequencies, self.phases, self.vectors, strict=True):
            s = np.sin(np.float32(f[0]) * x + np.float32(f[1]) * y + (np.float32(f[2]) * z + np.float32(phase)))
            xs, ys, zs = xs + np.float32(v[0]) * s, ys + np.float32(v[1]) * s, zs + np.float32(v[2]) * s
        return xs, ys, zs


class Shape(abc.ABC):
    """A solid given by an approximate signed distance (mm, negative inside) and an axis-aligned bounding box."""

    @abc.abstractmethod
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the lower and upper world corners (mm) of a box holding the shape (entries may be infinite)."""

    @abc.abstractmethod
    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the signed distance on broadcast ascending axes ``x (nx,1,1)``, ``y (1,ny,1)``, ``z (1,1,nz)``."""


class Ellipsoid(Shape):
    """A (super)ellipsoid ``sum |q_i / r_i|^n = 1``, optionally rotated and smoothly deformed.

    The signed distance is the first-order estimate ``(F - 1) / |grad F|`` of the implicit function ``F``, exact
    on the surface and good within a few voxels of it. An infinite radius gives an (elliptic) cylinder.

    Args:
        center: centre in world mm.
        radii: the three semi-axes in mm (``np.inf`` allowed).
        rotation: 3 x 3 matrix taking the shape's local axes to world axes (default identity).
        exponent: ``n``; 2 for an ellipsoid, larger for boxier superellipsoids.
        warp: an optional :class:`SmoothWarp` applied to the world coordinates first.
    """

    def __init__(
        self,
        center: Sequence[float],
        radii: Sequence[float],
        rotation: np.ndarray | None = None,
        exponent: float = 2.0,
        warp: SmoothWarp | None = None,
    ) -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.rotation = None if rotation is None else np.asarray(rotation, dtype=np.float64)
        self.exponent = float(exponent)
        self.warp = warp

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the box holding the shape (see :meth:`Shape.bounds`).

        Returns:
            the lower and upper world corners in mm.
        """
        r = np.abs(self.rotation) if self.rotation is not None else np.eye(3)
        with np.errstate(invalid="ignore"):
            half = np.where(r > 0, r * self.radii[None, :], 0.0).sum(axis=1)
        half = half + (self.warp.amplitude if self.warp is not None else 0.0)
        return self.center - half, self.center + half

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the signed distance in mm on broadcast axes (see :meth:`Shape.sdf`).

        Args:
            x: ``(nx, 1, 1)`` ascending x coordinates in mm.
            y: ``(1, ny, 1)`` ascending y coordinates in mm.
            z: ``(1, 1, nz)`` ascending z coordinates in mm.

        Returns:
            the signed distance, broadcastable to ``(nx, ny, nz)``.
        """
        if self.warp is not None:
            x, y, z = self.warp(x, y, z)
        d = (x - np.float32(self.center[0]), y - np.float32(self.center[1]), z - np.float32(self.center[2]))
        if self.rotation is None:
            q = d
        else:
            rt = self.rotation.astype(np.float32)
            q = tuple(rt[0, i] * d[0] + rt[1, i] * d[1] + rt[2, i] * d[2] for i in range(3))
        inv_r = (1.0 / self.radii).astype(np.float32)
        u = [np.abs(q[i]) * inv_r[i] for i in range(3)]
        n = self.exponent
        if n == 2.0:
            f = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
            g = np.sqrt((u[0] * inv_r[0]) ** 2 + (u[1] * inv_r[1]) ** 2 + (u[2] * inv_r[2]) ** 2)
            near = (f - 1.0) * f / np.maximum(g, np.float32(1e-12))
        else:
            f = (u[0] ** n + u[1] ** n + u[2] ** n) ** np.float32(1.0 / n)
            g = np.sqrt(sum((u[i] ** np.float32(n - 1) * inv_r[i]) ** 2 for i in range(3)))
            near = (f - 1.0) * f ** np.float32(n - 1) / np.maximum(g, np.float32(1e-12))
        deep = (f - 1.0) * np.float32(np.min(self.radii))
        return np.where(f < 0.5, deep, near)


class Tube(Shape):
    """A tube of linearly varying radius around a polyline (a chain of rounded cones), e.g. a vessel or bowel.

    Each segment is evaluated only in its own bounding box, so long thin tubes stay cheap.

    Args:
        points: ``(N, 3)`` polyline vertices in world mm (N >= 2).
        radii: ``(N,)`` radius in mm at each vertex, or one radius.
    """

    def __init__(self, points: np.ndarray, radii: float | Sequence[float]) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        self.radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(self.points),)).copy()

    @classmethod
    def through(cls, points: np.ndarray, radii: float | Sequence[float], samples_per_segment: int = 6) -> Tube:
        """Build a tube along a Catmull-Rom spline through ``points``; radii are interpolated linearly.

        Args:
            points: ``(N, 3)`` control points in world mm.
            radii: radius in mm at each control point, or one radius.
            samples_per_segment: polyline vertices per spline segment.

        Returns:
            the tube.
        """
        pts = np.asarray(points, dtype=np.float64)
        r = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
        curve = smooth_polyline(pts, samples_per_segment)
        s = np.linspace(0.0, len(pts) - 1.0, len(curve))
        return cls(curve, np.interp(s, np.arange(len(pts)), r))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the box holding the shape (see :meth:`Shape.bounds`).

        Returns:
            the lower and upper world corners in mm.
        """
        r = self.radii.max()
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the signed distance in mm on broadcast axes (see :meth:`Shape.sdf`).

        Args:
            x: ``(nx, 1, 1)`` ascending x coordinates in mm.
            y: ``(1, ny, 1)`` ascending y coordinates in mm.
            z: ``(1, 1, nz)`` ascending z coordinates in mm.

        Returns:
            the signed distance, broadcastable to ``(nx, ny, nz)``.
        """
        axes = (x.ravel(), y.ravel(), z.ravel())
        out = np.full((axes[0].size, axes[1].size, axes[2].size), _FAR, dtype=np.float32)
        for a, b, ra, rb in zip(self.points[:-1], self.points[1:], self.radii[:-1], self.radii[1:], strict=True):
            pad = max(ra, rb) + 4.0 * _axis_step(axes)
            lo, hi = np.minimum(a, b) - pad, np.maximum(a, b) + pad
            sl = tuple(
                slice(np.searchsorted(ax, low), np.searchsorted(ax, high, side="right"))
                for ax, low, high in zip(axes, lo, hi, strict=True)
            )
            if any(s.stop <= s.start for s in sl):
                continue
            dx = axes[0][sl[0]][:, None, None] - np.float32(a[0])
            dy = axes[1][sl[1]][None, :, None] - np.float32(a[1])
            dz = axes[2][sl[2]][None, None, :] - np.float32(a[2])
            ab = (b - a).astype(np.float32)
            length2 = max(float(ab @ ab), 1e-12)
            t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / np.float32(length2), 0.0, 1.0)
            dist = np.sqrt((dx - t * ab[0]) ** 2 + (dy - t * ab[1]) ** 2 + (dz - t * ab[2]) ** 2)
            np.minimum(out[sl], dist - (np.float32(ra) + t * np.float32(rb - ra)), out=out[sl])
        return out


_FAR = np.float32(1e6)  # signed distance used for "far outside" (finite, so value functions stay finite)


def _axis_step(axes: Axes) -> float:
    steps = [float(ax[1] - ax[0]) for ax in axes if ax.size > 1]
    return max(steps) if steps else 1.0


class HalfSpace(Shape):
    """The half-space ``(p - point) . normal <= 0`` (``normal`` points outwards)."""

    def __init__(self, point: Sequence[float], normal: Sequence[float]) -> None:
        self.point = np.asarray(point, dtype=np.float64)
        n = np.asarray(normal, dtype=np.float64)
        self.normal = n / np.linalg.norm(n)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the box holding the shape (see :meth:`Shape.bounds`).

        Returns:
            the lower and upper world corners in mm.
        """
        return np.full(3, -np.inf), np.full(3, np.inf)

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the signed distance in mm on broadcast axes (see :meth:`Shape.sdf`).

        Args:
            x: ``(nx, 1, 1)`` ascending x coordinates in mm.
            y: ``(1, ny, 1)`` ascending y coordinates in mm.
            z: ``(1, 1, nz)`` ascending z coordinates in mm.

        Returns:
            the signed distance, broadcastable to ``(nx, ny, nz)``.
        """
        n, p = self.normal.astype(np.float32), self.point.astype(np.float32)
        return (x - p[0]) * n[0] + (y - p[1]) * n[1] + (z - p[2]) * n[2]


class Union(Shape):
    """The union of shapes; with ``smoothness`` k > 0 (mm) a polynomial smooth minimum blends them."""

    def __init__(self, shapes: Sequence[Shape], smoothness: float = 0.0) -> None:
        self.shapes = list(shapes)
        self.smoothness = float(smoothness)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the box holding the shape (see :meth:`Shape.bounds`).

        Returns:
            the lower and upper world corners in mm.
        """
        b = [s.bounds() for s in self.shapes]
        return np.min([lo for lo, _ in b], axis=0), np.max([hi for _, hi in b], axis=0)

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the signed distance in mm on broadcast axes (see :meth:`Shape.sdf`).

        Args:
            x: ``(nx, 1, 1)`` ascending x coordinates in mm.
            y: ``(1, ny, 1)`` ascending y coordinates in mm.
            z: ``(1, 1, nz)`` ascending z coordinates in mm.

        Returns:
            the signed distance, broadcastable to ``(nx, ny, nz)``.
        """
        d = self.shapes[0].sdf(x, y, z)
        k = np.float32(self.smoothness)
        for shape in self.shapes[1:]:
            e = shape.sdf(x, y, z)
            if k > 0:
                h = np.clip(0.5 + 0.5 * (e - d) / k, 0.0, 1.0)
                d = e * (1 - h) + d * h - k * h * (1 - h)
            else:
                d = np.minimum(d, e)
        return d


class Intersection(Shape):
    """The intersection of shapes (maximum of their distances); bounds are the intersection of theirs."""

    def __init__(self, shapes: Sequence[Shape]) -> None:
        self.shapes = list(shapes)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the box holding the shape (see :meth:`Shape.bounds`).

        Returns:
            the lower and upper world corners in mm.
        """
        b = [s.bounds() for s in self.shapes]
        return np.max([lo for lo, _ in b], axis=0), np.min([hi for _, hi in b], axis=0)

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the signed distance in mm on broadcast axes (see :meth:`Shape.sdf`).

        Args:
            x: ``(nx, 1, 1)`` ascending x coordinates in mm.
            y: ``(1, ny, 1)`` ascending y coordinates in mm.
            z: ``(1, 1, nz)`` ascending z coordinates in mm.

        Returns:
            the signed distance, broadcastable to ``(nx, ny, nz)``.
        """
        d = self.shapes[0].sdf(x, y, z)
        for shape in self.shapes[1:]:
            d = np.maximum(d, shape.sdf(x, y, z))
        return d


class Difference(Shape):
    """``base`` minus ``cut`` (``max(d_base, -d_cut)``)."""

    def __init__(self, base: Shape, cut: Shape) -> None:
        self.base, self.cut = base, cut

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the box holding the shape (see :meth:`Shape.bounds`).

        Returns:
            the lower and upper world corners in mm.
        """
        return self.base.bounds()

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Return the signed distance in mm on broadcast axes (see :meth:`Shape.sdf`).

        Args:
            x: ``(nx, 1, 1)`` ascending x coordinates in mm.
            y: ``(1, ny, 1)`` ascending y coordinates in mm.
            z: ``(1, 1, nz)`` ascending z coordinates in mm.

        Returns:
            the signed distance, broadcastable to ``(nx, ny, nz)``.
        """
        return np.maximum(self.base.sdf(x, y, z), -self.cut.sdf(x, y, z))


class Canvas:
    """An image (float32) and a label map (uint8) on a voxel grid in world mm, painted with soft shapes.

    Args:
        shape: array shape ``(nx, ny, nz)``.
        spacing: voxel size in mm along each axis.
        background: the initial image value (e.g. -1000 HU for air).
        origin: world position (mm) of voxel ``(0, 0, 0)``; default centres the volume on the world origin.
        edge: width (mm) of the partial-volume ramp; default the mean voxel size.
    """

    def __init__(
        self,
        shape: Sequence[int],
        spacing: Sequence[float],
        background: float = 0.0,
        origin: Sequence[float] | None = None,
        edge: float | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = np.asarray(spacing, dtype=np.float64)
        self.affine = centered_affine(self.shape, self.spacing)
        if origin is not None:
            self.affine[:3, 3] = np.asarray(origin, dtype=np.float64)
        self.origin = self.affine[:3, 3].copy()
        self.edge = float(np.mean(self.spacing)) if edge is None else float(edge)
        self.axes = tuple(
            (self.origin[i] + np.arange(self.shape[i]) * self.spacing[i]).astype(np.float32) for i in range(3)
        )
        self.image = np.full(self.shape, background, dtype=np.float32)
        self.label = np.zeros(self.shape, dtype=np.uint8)

    def region(self, lo: np.ndarray, hi: np.ndarray) -> tuple[tuple[slice, slice, slice], Axes] | None:
        """Return the slices of the voxels whose centres lie in the world box ``[lo, hi]`` and their broadcast axes.

        Returns ``None`` when the box misses the grid.
        """
        slices = []
        for i in range(3):
            start, stop = 0, self.shape[i]
            if np.isfinite(lo[i]):
                start = int(np.ceil((lo[i] - self.origin[i]) / self.spacing[i]))
            if np.isfinite(hi[i]):
                stop = int(np.floor((hi[i] - self.origin[i]) / self.spacing[i])) + 1
            start, stop = max(start, 0), min(stop, self.shape[i])
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        sl = (slices[0], slices[1], slices[2])
        axes = (
            self.axes[0][sl[0]][:, None, None],
            self.axes[1][sl[1]][None, :, None],
            self.axes[2][sl[2]][None, None, :],
        )
        return sl, axes

    def fraction(self, shape: Shape) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray] | None:
        """Return ``(slices, fraction, sdf)`` of a shape on the part of the grid its bounds cover, or ``None``."""
        lo, hi = shape.bounds()
        pad = 2.0 * self.edge
        found = self.region(np.asarray(lo) - pad, np.asarray(hi) + pad)
        if found is None:
            return None
        sl, (x, y, z) = found
        crop = tuple(s.stop - s.start for s in sl)
        sdf = np.broadcast_to(shape.sdf(x, y, z), crop)
        return sl, soft_edge(sdf, self.edge), sdf

    def draw(self, shape: Shape, value: float | Callable[[np.ndarray], np.ndarray], label: int | None = None) -> None:
        """Paint a shape: blend the image towards ``value`` by the partial-volume fraction, and set ``label``.

        Args:
            shape: the shape to paint.
            value: the intensity inside, or a function of the depth below the surface (mm, ``-sdf``).
            label: the label written where the fraction is >= 0.5 (``0`` erases earlier labels, ``None`` keeps them).
        """
        found = self.fraction(shape)
        if found is None:
            return
        sl, frac, sdf = found
        target = value(-sdf) if callable(value) else np.float32(value)
        view = self.image[sl]
        view += frac * (target - view)
        if label is not None:
            self.label[sl][frac >= 0.5] = label


def smooth_random_field(
    rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float], correlation: float, std: float
) -> np.ndarray:
    """Return a smooth Gaussian random field (float32, zero mean, standard deviation ``std``) on a grid.

    White noise on a coarse grid of nodes every ``correlation`` mm, interpolated with Gaussian weights
    separably along each axis; the number of random draws depends on the field of view in mm only.

    Args:
        rng: the random generator.
        shape: the array shape.
        spacing: voxel size in mm.
        correlation: node spacing (about the correlation length) in mm.
        std: the target standard deviation.
    """
    weights = []
    for n, s in zip(shape, spacing, strict=True):
        extent = n * s
        nodes = np.arange(-correlation, extent + 2 * correlation, correlation)
        pos = (np.arange(n) + 0.5) * s
        w = np.exp(-0.5 * ((pos[:, None] - nodes[None, :]) / correlation) ** 2)
        weights.append((w / w.sum(axis=1, keepdims=True)).astype(np.float32))
    coarse = rng.standard_normal(tuple(w.shape[1] for w in weights)).astype(np.float32)
    field = np.einsum("ia,abc->ibc", weights[0], coarse)
    field = np.einsum("jb,ibc->ijc", weights[1], field)
    field = np.einsum("kc,ijc->ijk", weights[2], field)
    field -= field.mean()
    return field * np.float32(std / max(float(field.std()), 1e-12))


class Painter:
    """Paints signed distances on a :class:`Canvas` and keeps a tissue map beside its label map.

    Where a shape covers a voxel the image is blended towards the shape's value by the partial-volume fraction (a
    one-voxel ramp, :func:`soft_edge`); where it covers at least half, the label (unless ``None``) and the tissue
    code are set. The tissue map (one code per voxel, e.g. a phantom's ``TISSUES``) lets a generator describe more
    than its label classes (skin, fat, marrow, ...).

    Multi-channel: with ``extra`` images (e.g. the other contrasts of an MRI) every shape is painted in the canvas
    image and in each extra image with the same partial-volume fraction, and a value is given per image (a sequence
    of :attr:`images`' length, canvas image first).

    Args:
        canvas: the canvas (image, label, geometry).
        extra: float32 arrays of the canvas's shape painted alongside its image (painted in place); default none.

    Raises:
        ValueError: an extra image not of the canvas's shape.
    """

    def __init__(self, canvas: Canvas, extra: Sequence[np.ndarray] = ()) -> None:
        self.canvas = canvas
        self.tissue = np.zeros(canvas.shape, dtype=np.uint8)
        self.full = (slice(None),) * 3
        self.extra = list(extra)
        for image in self.extra:
            if image.shape != canvas.shape:
                raise ValueError(f"an extra image of shape {image.shape}; expected the canvas's {canvas.shape}")

    @property
    def images(self) -> list[np.ndarray]:
        """The painted images (not copies): the canvas image, then the extra ones."""
        return [self.canvas.image, *self.extra]

    def sdf(
        self,
        sdf: np.ndarray,
        value: Any,
        label: int | None,
        tissue: int | Callable[[np.ndarray], np.ndarray],
        sl: tuple[slice, ...] | None = None,
    ) -> None:
        """Paint the inside of a signed distance (mm, negative inside).

        Args:
            sdf: the signed distance on the region.
            value: the intensity: a number, an array of the region's shape, or a function of the depth (``-sdf``);
                with extra images a sequence of such values, one per image (:attr:`images`' order).
            label: the label where at least half covered, or None to keep the labels.
            tissue: the tissue code where at least half covered, or a function of the depth giving it.
            sl: the region's slices; default the whole grid.

        Raises:
            ValueError: with extra images, not one value per image.
        """
        sl = self.full if sl is None else sl
        frac = soft_edge(sdf, self.canvas.edge)
        values = value if self.extra else (value,)
        if not isinstance(values, (Sequence, np.ndarray)) or len(values) != len(self.extra) + 1:
            raise ValueError(f"a {type(value).__name__} value; expected {len(self.extra) + 1} values, one per image")
        for image, image_value in zip(self.images, values, strict=True):
            target = image_value(-sdf) if callable(image_value) else image_value
            view = image[sl]
            view += frac * (np.float32(target) - view) if np.isscalar(target) else frac * (target - view)
        inside = sdf <= 0
        if label is not None:
            self.canvas.label[sl][inside] = label
        codes = tissue(-sdf) if callable(tissue) else tissue
        self.tissue[sl][inside] = codes[inside] if isinstance(codes, np.ndarray) else codes

    def shape(
        self,
        shape: Shape,
        value: Any,
        label: int | None,
        tissue: int | Callable[[np.ndarray], np.ndarray],
        clip: np.ndarray | None = None,
    ) -> None:
        """Paint a shape on the box its bounds cover, optionally only inside a full-grid signed distance ``clip``.

        Args:
            shape: the shape (world mm).
            value: the intensity, or a function of the depth.
            label: the label, or None.
            tissue: the tissue code, or a function of the depth giving it.
            clip: a full-grid signed distance bounding the shape (intersection), or None.
        """
        found = self.canvas.fraction(shape)
        if found is None:
            return
        sl, _, sdf = found
        if clip is not None:
            sdf = np.maximum(sdf, clip[sl])
        self.sdf(sdf, value, label, tissue, sl)
