"""Random smooth B-spline deformation combined with a random rigid motion, applied in one resampling."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.transforms.spatial.array import RandAffineGrid, Resample
from monai.transforms.utils import create_grid
from monai.utils import MAX_SEED, ensure_tuple_rep
from monai.utils.type_conversion import convert_to_tensor

__all__ = ["bspline_n_control", "bspline_basis_matrix", "bspline_displacement_field", "RandBSplineAffined"]


def bspline_n_control(n_points: int, grid_spacing: float) -> int:
    """Number of control points a cubic B-spline needs to cover ``n_points`` samples ``grid_spacing`` apart.

    Args:
        n_points: number of samples along the axis.
        grid_spacing: control-point spacing in samples.

    Returns:
        ``ceil((n_points - 1) / grid_spacing) + 3``: the points inside the axis plus one before and two after it.
    """
    return int(np.ceil((n_points - 1) / grid_spacing)) + 3


def bspline_basis_matrix(n_points: int, grid_spacing: float) -> np.ndarray:
    """Uniform cubic B-spline weights of ``n_points`` samples on control points ``grid_spacing`` apart.

    Control point ``k`` sits at sample coordinate ``(k - 1) * grid_spacing``; there are
    ``ceil((n_points - 1) / grid_spacing) + 3`` of them so every sample has its four supporting points.

    Args:
        n_points: number of samples along the axis.
        grid_spacing: control-point spacing in samples.

    Returns:
        array ``[n_points, n_control]`` whose rows are the four non-zero cubic B-spline weights (summing to 1).

    Raises:
        ValueError: ``n_points < 1`` or ``grid_spacing <= 0``.
    """
    if n_points < 1 or grid_spacing <= 0:
        raise ValueError(f"n_points must be >= 1 and grid_spacing > 0, got {n_points}, {grid_spacing}.")
    n_control = bspline_n_control(n_points, grid_spacing)
    t = np.arange(n_points, dtype=np.float64) / grid_spacing
    i = np.floor(t).astype(int)
    f = t - i
    weights = np.stack(
        [(1 - f) ** 3 / 6, (3 * f**3 - 6 * f**2 + 4) / 6, (-3 * f**3 + 3 * f**2 + 3 * f + 1) / 6, f**3 / 6], axis=1
    )
    basis = np.zeros((n_points, n_control), dtype=np.float64)
    rows = np.arange(n_points)
    for j in range(4):
        np.add.at(basis, (rows, np.minimum(i + j, n_control - 1)), weights[:, j])
    return basis


def bspline_displacement_field(
    control_displacements: np.ndarray, spatial_size: Sequence[int], grid_spacing
) -> np.ndarray:
    """Dense displacement field interpolated from control-point displacements by a tensor-product cubic B-spline.

    Args:
        control_displacements: ``[ndim, *n_control]`` displacements (voxels) at the control points.
        spatial_size: the dense field's spatial size.
        grid_spacing: control-point spacing in voxels, one value or one per dimension.

    Returns:
        ``[ndim, *spatial_size]`` float32 displacements in voxels. Because B-spline weights are non-negative and sum
        to one, ``|field| <= max |control_displacements|`` everywhere.
    """
    ndim = len(spatial_size)
    spacing = ensure_tuple_rep(grid_spacing, ndim)
    field = control_displacements
    for d in range(ndim):
        basis = bspline_basis_matrix(int(spatial_size[d]), float(spacing[d]))
        field = np.moveaxis(np.tensordot(field, basis, axes=([1 + d], [1])), -1, 1 + d)
    return field.astype(np.float32)


class RandBSplineAffined(RandomizableTransform, MapTransform):
    """Random B-spline deformation, rotation and translation of image and label in a single resampling.

    Implements the data augmentation of Roth et al. (2018), Section II.B: "smooth B-spline deformations to both the
    image and label data, similar to [Çiçek et al.]. The deformation fields are randomly sampled from a uniform
    distribution with a maximum displacement of 4 and a grid spacing of 24 voxels. Furthermore, we applied random
    rotations between -20° and +20°, and translations of -20 to +20 voxels in each dimension at each iteration."

    Control-point displacements are drawn from ``uniform[-max_displacement, max_displacement]`` per component on a
    grid ``grid_spacing`` voxels apart and interpolated with a cubic B-spline (so no voxel moves more than
    ``max_displacement``). The deformed sampling grid is then rotated and translated with MONAI's
    ``RandAffineGrid`` about the output centre and every key is resampled once with MONAI's ``Resample``, the
    random values drawn once per sample and shared by all keys. The output has ``spatial_size`` voxels taken about
    the centre of the input or, with ``random_center``, about a uniformly random position at which a
    ``spatial_size`` box fits in the input (the paper's "randomly cropped subvolumes"). Sampling from the whole
    volume rather than a crop lets rotation and translation bring in real context instead of padding.

    Args:
        keys: keys to transform (image, label, ...).
        spatial_size: output spatial size; ``None`` keeps the input size.
        random_center: centre the output at a uniformly random valid crop position instead of the input centre.
        max_displacement: maximum control-point displacement in voxels (paper: 4).
        grid_spacing: control-point spacing in voxels (paper: 24).
        rotate_range: rotation range in radians per axis, MONAI ``RandAffine`` format (paper: 20° = 0.349).
        translate_range: translation range in voxels per axis (paper: 20).
        mode: interpolation per key, e.g. ``("bilinear", "nearest")``.
        padding_mode: padding per key for samples outside the input.
        prob: probability of applying the deformation and motion; otherwise the plain crop (centred, or at the
            random position with ``random_center``) is returned.
        allow_missing_keys: don't raise for missing keys.

    Input ``[C, *spatial]`` per key -> output ``[C, *spatial_size]`` per key.
    """

    backend = Resample.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int] | None = None,
        random_center: bool = False,
        max_displacement: float = 4.0,
        grid_spacing: float | Sequence[float] = 24.0,
        rotate_range=None,
        translate_range=None,
        mode: str | Sequence[str] = "bilinear",
        padding_mode: str | Sequence[str] = "zeros",
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if max_displacement < 0:
            raise ValueError(f"max_displacement must be >= 0, got {max_displacement}.")
        self.spatial_size = None if spatial_size is None else tuple(int(s) for s in spatial_size)
        self.random_center = random_center
        self.max_displacement = float(max_displacement)
        self.grid_spacing = grid_spacing
        self.rand_affine_grid = RandAffineGrid(rotate_range=rotate_range, translate_range=translate_range)
        self.resampler = Resample()
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.padding_mode = ensure_tuple_rep(padding_mode, len(self.keys))
        self.control_displacements: np.ndarray | None = None
        self.center_offset: np.ndarray | None = None

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandBSplineAffined:
        """Seed this transform's generator, then seed the inner ``RandAffineGrid`` from a draw of it.

        Giving both generators the same seed would make the rotation draws repeat the apply/crop/displacement
        draws (with ``prob`` 0.5 every applied rotation about the first axis would fall in [-range, 0]); one draw
        of the outer generator makes the inner stream independent yet still determined by ``seed``.

        Args:
            seed: seed of this transform's generator.
            state: a ``np.random.RandomState`` to use instead.

        Returns:
            this transform.
        """
        super().set_random_state(seed, state)
        self.rand_affine_grid.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, spatial_size: Sequence[int], input_size: Sequence[int] | None = None) -> None:
        """Draw the crop position (in voxels from the input centre), control displacements and rigid motion."""
        super().randomize(None)
        input_size = spatial_size if input_size is None else input_size
        offset = np.zeros(len(spatial_size))
        if self.random_center:
            for d, (n_in, n_out) in enumerate(zip(input_size, spatial_size, strict=True)):
                if n_in > n_out:
                    offset[d] = self.R.randint(0, n_in - n_out + 1) + (n_out - 1) / 2 - (n_in - 1) / 2
        self.center_offset = offset
        if not self._do_transform:
            return
        ndim = len(spatial_size)
        spacing = ensure_tuple_rep(self.grid_spacing, ndim)
        n_control = [bspline_n_control(s, g) for s, g in zip(spatial_size, spacing, strict=True)]
        self.control_displacements = self.R.uniform(
            -self.max_displacement, self.max_displacement, size=[ndim, *n_control]
        )
        self.rand_affine_grid.randomize()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Crop, deform and move every key with one random draw.

        Args:
            data: dictionary of channel-first ``[C, *spatial]`` tensors.

        Returns:
            a new dictionary with each key resampled to ``[C, *spatial_size]``.

        Raises:
            ValueError: ``spatial_size`` has a different number of dimensions than the input.
        """
        d = dict(data)
        first = self.first_key(d)
        if first == []:
            return d
        in_size = tuple(d[first].shape[1:])
        out_size = self.spatial_size or in_size
        if len(out_size) != len(in_size):
            raise ValueError(f"spatial_size {out_size} does not match the input's {len(in_size)} spatial dims.")
        self.randomize(out_size, in_size)
        device = d[first].device if isinstance(d[first], torch.Tensor) else None
        grid = create_grid(spatial_size=out_size, device=device, backend="torch")
        ndim = len(out_size)
        if self._do_transform:
            field = bspline_displacement_field(self.control_displacements, out_size, self.grid_spacing)
            grid[:ndim] += convert_to_tensor(field, device=grid.device, dtype=grid.dtype)
            grid = self.rand_affine_grid(grid=grid, randomize=False)
        offset = convert_to_tensor(self.center_offset, device=grid.device, dtype=grid.dtype)
        grid[:ndim] += offset.reshape(-1, *([1] * ndim))
        for key, mode, padding_mode in self.key_iterator(d, self.mode, self.padding_mode):
            d[key] = self.resampler(d[key], grid=grid, mode=mode, padding_mode=padding_mode)
        return d
