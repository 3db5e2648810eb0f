"""Sub-volume extraction around a centre with one of five augmentations (brain CT perfusion, II-B.2 and II-B.3)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple, ensure_tuple_rep

__all__ = [
    "AUGMENTATIONS",
    "RandSubvolumeAugmentd",
    "corner_displacement_field",
    "crop_subvolume",
    "euler_rotation_matrix",
    "sample_subvolume",
    "subvolume_coordinates",
]

AUGMENTATIONS = ("identity", "mirror", "rotate", "scale", "elastic")
_MODES = ("bilinear", "nearest")


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor view of ``x``.

    Returns:
        ``x`` itself for a tensor, its plain tensor for a MetaTensor (no metadata), an array as a tensor.
    """
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(x)


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype a volume of ``dtype`` is resampled in.

    Returns:
        float64 for float64, float32 for everything else.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def euler_rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """3D rotation matrix from Euler angles about array axes 0, 1 and 2 (Section II-B.3, "3D Euler rotation").

    ``R = R_2(angles[2]) @ R_1(angles[1]) @ R_0(angles[0])``: the rotation about axis 0 is applied first. ``R_k``
    turns the plane of the other two axes in their cyclic order (``R_2`` takes axis 0 towards axis 1).

    Args:
        angles: three angles in radians.

    Returns:
        ``[3, 3]`` float64 rotation matrix.

    Raises:
        ValueError: not three angles.
    """
    if len(angles) != 3:
        raise ValueError(f"angles must be three (about axes 0, 1, 2), got {len(angles)}.")
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        i, j = (axis + 1) % 3, (axis + 2) % 3
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        matrix = r @ matrix
    return matrix


def corner_displacement_field(corner_offsets: Any, spatial_size: Sequence[int]) -> torch.Tensor:
    """Displacement field trilinearly interpolated from offsets at the 8 corners of a box (Section II-B.3, elastic).

    Implements the paper's elastic deformation: "each individual corner point of the bounding box of the subvolume
    was given a different randomized offset in voxels for the x, y, and z coordinates", interpolated linearly in
    3D over the sub-volume. Corner ``(i, j, k)`` (each 0 or 1) sits at voxel ``(i (n0 - 1), j (n1 - 1), k (n2 - 1))``.

    Args:
        corner_offsets: ``[2, 2, 2, 3]`` offsets in voxels (corner index per axis, then the offset's components);
            a tensor (its device and floating dtype are kept) or an array.
        spatial_size: the box size ``(n0, n1, n2)``.

    Returns:
        ``[n0, n1, n2, 3]`` displacements in voxels, equal to the corner offsets at the corners.

    Raises:
        ValueError: ``corner_offsets`` is not ``[2, 2, 2, 3]`` or ``spatial_size`` is not three sizes.
    """
    offsets = torch.as_tensor(corner_offsets)
    if not offsets.is_floating_point():
        offsets = offsets.double()
    if tuple(offsets.shape) != (2, 2, 2, 3) or len(spatial_size) != 3:
        raise ValueError(
            f"corner_offsets must be [2, 2, 2, 3] and spatial_size three sizes, got {tuple(offsets.shape)} and "
            f"{tuple(spatial_size)}."
        )
    weights = []
    for n in spatial_size:
        t = torch.arange(int(n), dtype=offsets.dtype, device=offsets.device) / max(int(n) - 1, 1)
        weights.append(torch.stack([1 - t, t], dim=1))
    return torch.einsum("xi,yj,zk,ijkc->xyzc", *weights, offsets)


def subvolume_coordinates(
    center: Sequence[int],
    spatial_size: Sequence[int],
    matrix: Any | None = None,
    displacement: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Input voxel coordinates sampled by each voxel of a sub-volume centred on ``center`` (Section II-B.2-3).

    Output voxel ``o`` (``0 <= o < n``) reads input coordinate ``x = g + A (o - p) + d(o)`` with ``p = (n - 1) / 2``
    the sub-volume's geometric centre, ``g = center - n // 2 + p`` its position in the input, ``A`` the ``matrix``
    and ``d`` the ``displacement``. With ``A = I`` and ``d = 0`` this is the plain crop
    ``input[center - n // 2 : center - n // 2 + n]``: the centre voxel lands at output index ``n // 2`` (MONAI's
    ``SpatialCrop(roi_center=center)``), and rotation and scaling turn about the sub-volume's centre.

    Args:
        center: input voxel index the sub-volume is centred on.
        spatial_size: sub-volume size ``n`` per axis.
        matrix: ``[3, 3]`` linear map about the centre (e.g. a rotation, or ``I / s`` to zoom in by ``s``).
        displacement: ``[*spatial_size, 3]`` displacement in voxels added to the coordinates.
        device: device of the result.
        dtype: floating dtype of the result.

    Returns:
        ``[*spatial_size, 3]`` input voxel coordinates.

    Raises:
        ValueError: ``center`` and ``spatial_size`` differ in length.
    """
    if len(center) != len(spatial_size):
        raise ValueError(f"center {tuple(center)} and spatial_size {tuple(spatial_size)} differ in length.")
    axes = [torch.arange(int(n), device=device, dtype=dtype) - (int(n) - 1) / 2 for n in spatial_size]
    u = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    if matrix is not None:
        u = u @ torch.as_tensor(matrix, device=u.device, dtype=dtype).T
    if displacement is not None:
        u = u + torch.as_tensor(displacement).to(device=u.device, dtype=dtype)
    origin = [float(c) - int(n) // 2 + (int(n) - 1) / 2 for c, n in zip(center, spatial_size, strict=True)]
    return u + torch.tensor(origin, device=u.device, dtype=dtype)


def sample_subvolume(volume: torch.Tensor, coordinates: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample a channel-first volume at voxel coordinates, zero outside the volume (Section II-B.2).

    "All subvolume voxels which were sampled outside of the input data were set to zero value." Only the block of
    ``volume`` that the coordinates reach (plus the interpolation neighbours) is converted to floating point and
    handed to ``torch.nn.functional.grid_sample`` (``align_corners=True``, zero padding), so sampling a 124^3
    sub-volume from a cached 19x512x512x320 volume touches a few 124^3 blocks, not the whole volume.

    Args:
        volume: ``[C, X, Y, Z]`` tensor (any dtype; integer volumes are sampled in float32 and cast back, which is
            exact for ``mode="nearest"`` and integer magnitudes below 2**24).
        coordinates: ``[*out, 3]`` input voxel coordinates (e.g. from :func:`subvolume_coordinates`).
        mode: ``"bilinear"`` (trilinear, interpolation order 1) or ``"nearest"`` (order 0).

    Returns:
        ``[C, *out]``: for ``"nearest"`` in ``volume``'s dtype, for ``"bilinear"`` in float32 (float64 for a
        float64 volume).

    Raises:
        ValueError: ``volume`` is not ``[C, X, Y, Z]`` with every spatial size ``>= 2``, ``coordinates`` does not end
            in 3, or ``mode`` is unknown.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    if volume.ndim != 4 or min(volume.shape[1:]) < 2:
        raise ValueError(f"volume must be [C, X, Y, Z] with spatial sizes >= 2, got shape {tuple(volume.shape)}.")
    if coordinates.shape[-1] != 3:
        raise ValueError(f"coordinates must be [*out, 3], got shape {tuple(coordinates.shape)}.")
    out_dtype = volume.dtype if mode == "nearest" else _float_dtype(volume.dtype)
    compute = _float_dtype(volume.dtype)
    coords = coordinates.to(device=volume.device, dtype=compute)
    out_shape = (volume.shape[0], *coords.shape[:-1])
    flat = coords.reshape(-1, 3)
    low = torch.floor(flat.min(dim=0).values).tolist() if flat.numel() else [0.0] * 3
    high = torch.ceil(flat.max(dim=0).values).tolist() if flat.numel() else [-1.0] * 3
    starts, stops = [], []
    for lo, hi, size in zip(low, high, volume.shape[1:], strict=True):
        lo, hi = max(int(lo), 0), min(int(hi), size - 1)
        if hi < lo:  # every point is more than one voxel outside: all zero
            return torch.zeros(out_shape, dtype=out_dtype, device=volume.device)
        if hi == lo:  # grid_sample needs two voxels per axis to normalise coordinates
            hi, lo = (hi + 1, lo) if hi + 1 < size else (hi, lo - 1)
        starts.append(lo)
        stops.append(hi + 1)
    block = volume[:, starts[0] : stops[0], starts[1] : stops[1], starts[2] : stops[2]].to(compute)
    scale = torch.tensor([2.0 / (b - a - 1) for a, b in zip(starts, stops, strict=True)], device=coords.device)
    grid = (coords - torch.tensor(starts, device=coords.device, dtype=compute)) * scale.to(compute) - 1
    grid = grid.flip(-1)  # grid_sample reads (W, H, D) = (axis 2, axis 1, axis 0)
    grid = grid.reshape(1, -1, 1, 1, 3)  # grid_sample wants a 5D grid; any output shape is a column of points
    out = F.grid_sample(block[None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    out = out.reshape(out_shape)
    if mode == "nearest" and not out_dtype.is_floating_point:
        out = torch.round(out)
    return out.to(out_dtype)


def crop_subvolume(
    volume: torch.Tensor, start: Sequence[int], size: Sequence[int], flip_axes: Sequence[int] = ()
) -> torch.Tensor:
    """Exact crop ``volume[:, start : start + size]``, zero where it leaves the volume, optionally flipped.

    Identity and mirroring (Section II-B.3) reproduce voxels exactly, so they are cut out rather than resampled.

    Args:
        volume: ``[C, *spatial]`` tensor.
        start: first input index per spatial axis (may be negative or past the end).
        size: crop size per spatial axis.
        flip_axes: spatial axes (0-based, without the channel) to reverse after cropping.

    Returns:
        ``[C, *size]`` tensor of ``volume``'s dtype and device.
    """
    out = torch.zeros((volume.shape[0], *(int(s) for s in size)), dtype=volume.dtype, device=volume.device)
    src, dst = [slice(None)], [slice(None)]
    for a, n, length in zip(start, size, volume.shape[1:], strict=True):
        lo, hi = max(int(a), 0), min(int(a) + int(n), length)
        if hi <= lo:
            return out.flip([1 + ax for ax in flip_axes]) if flip_axes else out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(a), hi - int(a)))
    out[tuple(dst)] = volume[tuple(src)]
    return out.flip([1 + ax for ax in flip_axes]) if flip_axes else out


class RandSubvolumeAugmentd(MapTransform, Randomizable):
    """Cut a sub-volume around a centre with one of five random augmentations, the same draw for every key.

    Implements the sub-volume sampling and augmentation of the brain CT perfusion paper, Sections II-B.2 and
    II-B.3: "For each subvolume in the training data, one of the five following augmentations was assigned with
    equal probability: identity-, mirroring-, rotation-, uniform scaling-, or elastic deformation. [...] A selected
    transformation was calculated once and then applied to the input subvolume, annotation labels, and annotation
    mask, with interpolation orders 1, 0, and 0, respectively."

    - identity: the plain crop (an exact copy of the voxels);
    - mirror: the crop flipped along the sagittal axis only (``mirror_axis``, array axis 0 = left-right for
      RAS-oriented arrays), exact;
    - rotate: a 3D Euler rotation about the sub-volume centre, the angles about axes 0, 1, 2 each from
      ``U(-rotate_degrees, rotate_degrees)`` (paper: 8 degrees); output voxel ``o`` reads
      ``centre + R (o - centre)`` (see :func:`euler_rotation_matrix`);
    - scale: uniform up-scaling by ``s ~ U(*scale_range)`` (paper: 1.01..1.25; "scaling down was omitted"),
      output voxel ``o`` reads ``centre + (o - centre) / s``;
    - elastic: each of the 8 corners of the sub-volume's bounding box gets an offset per axis from
      ``N(0, elastic_sigma)`` voxels (paper: 6), trilinearly interpolated over the sub-volume
      (:func:`corner_displacement_field`) and added to the sampling coordinates.

    The sub-volume is sampled directly from the whole (cached) volume around ``data[center_key]`` (e.g. from
    ``ClassBalancedDataset``), so a rotated or deformed sub-volume reads real neighbouring tissue; only what falls
    outside the volume is zero (paper: "All subvolume voxels which were sampled outside of the input data were set
    to zero value"). The paper centres sub-volumes in world coordinates; this transform works in voxel coordinates,
    which for the paper's near-isotropic 0.47 x 0.47 x 0.5 mm voxels differs by about 6 % along the third axis in
    the rotation and none in the other augmentations. Resampling uses ``torch.nn.functional.grid_sample``
    (``align_corners=True``, zero padding) on only the block of the volume the sub-volume reaches
    (:func:`sample_subvolume`); identity and mirror are exact crops (:func:`crop_subvolume`).

    Keys in ``crop_keys`` (label, mask) are cut to the central ``label_size`` voxels, the valid-convolution
    network's output (``n - 88``; start ``(n - m) // 2``); they are sampled only there, at the same coordinates as
    the corresponding image voxels. ``n // 2``, where the centre voxel lands, lies inside that crop.

    Args:
        keys: keys to sample, e.g. ``("image", "label", "mask")``; each ``[C, X, Y, Z]``.
        spatial_size: sub-volume size ``n`` (one int or three; paper: 124).
        label_size: size ``m`` of the ``crop_keys`` outputs (one int or three); ``None`` keeps ``spatial_size``.
        mode: ``"bilinear"`` or ``"nearest"`` per key (paper: interpolation orders 1, 0, 0).
        center_key: key of the centre voxel index (three ints; a tensor or sequence).
        crop_keys: keys cut to ``label_size``.
        augmentations: the augmentations to choose from, a subset of :data:`AUGMENTATIONS`; empty means identity
            only (a no-augmentation run).
        weights: relative probability of each of ``augmentations``; ``None`` is equal probability (the paper).
        rotate_degrees: rotation range in degrees, one value or one per axis (0, 1, 2).
        scale_range: ``(low, high)`` of the uniform scale factor.
        elastic_sigma: standard deviation in voxels of the corner offsets.
        mirror_axis: spatial axis flipped by ``"mirror"``.
        allow_missing_keys: don't raise for missing keys.

    ``[C, X, Y, Z]`` per key plus the centre -> ``[C, *spatial_size]`` for the other keys (float for
    ``"bilinear"``) and ``[C, *label_size]`` for ``crop_keys`` (input dtype and exact values for ``"nearest"``),
    as plain tensors; other entries pass through.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int],
        label_size: int | Sequence[int] | None = None,
        mode: str | Sequence[str] = ("bilinear", "nearest", "nearest"),
        center_key: str = "center",
        crop_keys: KeysCollection = ("label", "mask"),
        augmentations: Sequence[str] = AUGMENTATIONS,
        weights: Sequence[float] | None = None,
        rotate_degrees: float | Sequence[float] = 8.0,
        scale_range: Sequence[float] = (1.01, 1.25),
        elastic_sigma: float = 6.0,
        mirror_axis: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.spatial_size = tuple(int(s) for s in ensure_tuple_rep(spatial_size, 3))
        self.label_size = (
            self.spatial_size if label_size is None else tuple(int(s) for s in ensure_tuple_rep(label_size, 3))
        )
        if min(self.spatial_size) < 1 or min(self.label_size) < 1:
            raise ValueError(f"spatial_size and label_size must be positive, got {spatial_size}, {label_size}.")
        if any(m > n for m, n in zip(self.label_size, self.spatial_size, strict=True)):
            raise ValueError(f"label_size {self.label_size} must not exceed spatial_size {self.spatial_size}.")
        modes = ensure_tuple(mode)
        if len(modes) not in (1, len(self.keys)):
            raise ValueError(f"mode must be one mode or one mode per key {self.keys}, got {mode}.")
        self.mode = modes * len(self.keys) if len(modes) == 1 else modes
        if any(m not in _MODES for m in self.mode):
            raise ValueError(f"mode must be one of {_MODES} per key, got {self.mode}.")
        self.center_key = center_key
        self.crop_keys = set(ensure_tuple(crop_keys))
        self.augmentations = tuple(augmentations) or ("identity",)
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown or len(set(self.augmentations)) != len(self.augmentations):
            raise ValueError(f"augmentations must be distinct names from {AUGMENTATIONS}, got {augmentations}.")
        if weights is None:
            self.weights = None
        else:
            w = np.asarray(weights, dtype=float)
            if w.shape != (len(self.augmentations),) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(
                    f"weights must be {len(self.augmentations)} non-negative values, not all 0, got {weights}."
                )
            self.weights = w / w.sum()
        self.rotate_degrees = tuple(float(r) for r in ensure_tuple_rep(rotate_degrees, 3))
        if min(self.rotate_degrees) < 0:
            raise ValueError(f"rotate_degrees must be >= 0, got {rotate_degrees}.")
        self.scale_range = tuple(float(s) for s in scale_range)
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}.")
        if elastic_sigma < 0:
            raise ValueError(f"elastic_sigma must be >= 0, got {elastic_sigma}.")
        self.elastic_sigma = float(elastic_sigma)
        if mirror_axis not in (0, 1, 2):
            raise ValueError(f"mirror_axis must be 0, 1 or 2, got {mirror_axis}.")
        self.mirror_axis = int(mirror_axis)
        self.augmentation = "identity"
        self.angles = np.zeros(3)
        self.scale = 1.0
        self.corner_offsets = np.zeros((2, 2, 2, 3))

    def randomize(self, data: Any = None) -> None:
        """Choose the augmentation, then draw its parameters (only those of the chosen one).

        Sets ``augmentation`` (name), ``angles`` (radians, for ``"rotate"``), ``scale`` (``"scale"``) and
        ``corner_offsets`` (``[2, 2, 2, 3]`` voxels, ``"elastic"``); the others are reset to the identity.

        Args:
            data: unused.
        """
        n = len(self.augmentations)
        if n == 1:
            index = 0
        elif self.weights is None:
            index = int(self.R.randint(n))
        else:
            index = int(self.R.choice(n, p=self.weights))
        self.augmentation = self.augmentations[index]
        self.angles = np.zeros(3)
        self.scale = 1.0
        self.corner_offsets = np.zeros((2, 2, 2, 3))
        if self.augmentation == "rotate":
            limits = np.deg2rad(self.rotate_degrees)
            self.angles = self.R.uniform(-limits, limits)
        elif self.augmentation == "scale":
            self.scale = float(self.R.uniform(*self.scale_range))
        elif self.augmentation == "elastic":
            self.corner_offsets = self.R.normal(0.0, self.elastic_sigma, size=(2, 2, 2, 3))

    def sampling_coordinates(
        self, center: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Input voxel coordinates of the ``spatial_size`` sub-volume for the current draw.

        Args:
            center: centre voxel index.
            device: device of the result.
            dtype: floating dtype of the result.

        Returns:
            ``[*spatial_size, 3]`` coordinates (see :func:`subvolume_coordinates`).
        """
        matrix, displacement = None, None
        if self.augmentation == "mirror":
            matrix = np.eye(3)
            matrix[self.mirror_axis, self.mirror_axis] = -1.0
        elif self.augmentation == "rotate":
            matrix = euler_rotation_matrix(self.angles)
        elif self.augmentation == "scale":
            matrix = np.eye(3) / self.scale
        elif self.augmentation == "elastic":
            displacement = corner_displacement_field(
                torch.as_tensor(self.corner_offsets, dtype=dtype, device=device), self.spatial_size
            )
        return subvolume_coordinates(center, self.spatial_size, matrix, displacement, device=device, dtype=dtype)

    def _crop_slices(self, key: Hashable) -> tuple[slice, ...]:
        """Where a key's output lies within the ``spatial_size`` sub-volume.

        Returns:
            one slice per spatial axis: the central ``label_size`` for ``crop_keys``, everything for the others.
        """
        size = self.label_size if key in self.crop_keys else self.spatial_size
        return tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(self.spatial_size, size, strict=True))

    def _exact_crop(self, volume: torch.Tensor, center: Sequence[int], key: Hashable) -> torch.Tensor:
        """Identity or mirror of one key as an exact crop.

        Returns:
            the key's output, cut from ``volume`` without resampling.
        """
        mirror = self.augmentation == "mirror"
        start, size = [], []
        for axis, (c, n, sl) in enumerate(zip(center, self.spatial_size, self._crop_slices(key), strict=True)):
            first = c - n // 2
            m = sl.stop - sl.start
            # mirrored, output index o reads first + n - 1 - o: the ascending input range of o in the slice
            start.append(first + n - sl.stop if mirror and axis == self.mirror_axis else first + sl.start)
            size.append(m)
        return crop_subvolume(volume, start, size, flip_axes=(self.mirror_axis,) if mirror else ())

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Sample every key around ``data[center_key]`` with one random draw.

        Args:
            data: dictionary with the keys' ``[C, X, Y, Z]`` volumes and the centre.

        Returns:
            a new dictionary with the keys replaced by their sub-volumes (plain tensors).

        Raises:
            ValueError: the centre is missing or not three indices, or a volume is not ``[C, X, Y, Z]``.
        """
        d = dict(data)
        if self.center_key not in d:
            raise ValueError(
                f"no {self.center_key!r} in the data (keys {sorted(map(str, d))}); put a centre sampler such as "
                "ClassBalancedDataset before this transform."
            )
        center = [int(round(float(c))) for c in torch.as_tensor(d[self.center_key]).reshape(-1).tolist()]
        if len(center) != 3:
            raise ValueError(f"{self.center_key!r} must hold three voxel indices, got {d[self.center_key]}.")
        self.randomize()
        coordinates = None
        for key, mode in self.key_iterator(d, self.mode):
            volume = _plain(d[key])
            if volume.ndim != 4:
                raise ValueError(f"{key!r} must be [C, X, Y, Z], got shape {tuple(volume.shape)}.")
            if self.augmentation in ("identity", "mirror"):
                out = self._exact_crop(volume, center, key)
                d[key] = out.to(_float_dtype(volume.dtype)) if mode == "bilinear" else out
                continue
            if coordinates is None or coordinates.device != volume.device:
                coordinates = self.sampling_coordinates(center, device=volume.device)
            d[key] = sample_subvolume(volume, coordinates[self._crop_slices(key)], mode)
        return d
