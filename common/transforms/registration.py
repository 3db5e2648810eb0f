"""Rigid registration of the time points of a 4D CT to one reference time point (elastix, Euler transform).

Implements the pre-processing of the 4D CT brain tissue segmentation paper (CNN trained from sparse 2D annotations),
Section III-B: "Time points t > 0 were rigidly registered to the first time point (t = 0), to correct for potential
head movement during acquisition. The registration was performed with Elastix using the steps and parameter settings
as described by Manniesing et al. [22]" (Manniesing, Oei, Oostveen, et al., "White matter and gray matter segmentation
in 4D computed tomography", Sci. Rep. 7:119, 2017).

Manniesing et al.'s elastix parameter file could not be found (no copy in the elastix model zoo or in public code), so
the settings are elastix's own default rigid registration (``ParameterObject.GetDefaultParameterMap("rigid")``:
Euler transform, Mattes mutual information with 32 bins, adaptive stochastic gradient descent, 4 resolutions, 2048
random samples an iteration, cubic B-spline final resampling) with these changes for a 512 x 512 x 320 x 19 perfusion
CT, each commented in :data:`RIGID_PARAMETERS`: downsampling (recursive) pyramids instead of smoothing-only ones,
which keep every level at full size; 250 iterations a level (the elastix manual's usual value; the default map has
256); a fixed random seed (the same result on every run with one thread); the mask, when asked for, not eroded.

Why mutual information rather than mean squares or normalized correlation: the contrast bolus raises arteries and
veins by hundreds of HU and brain tissue by tens of HU between time points, which pulls intensity-difference metrics
towards aligning the enhancement rather than the anatomy; mutual information only asks the intensities to correspond.
One 512 x 512 x 320 frame takes about 30 s on two CPU threads (measured on an upsampled phantom), so a 19-frame
acquisition takes some 9 minutes on two threads and proportionally less on more.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from common.data.switches import as_bool

__all__ = [
    "RIGID_PARAMETERS",
    "RegisterTimePointsd",
    "euler_matrix",
    "register_time_points",
    "rigid_parameter_map",
    "rigid_transform_points",
]

logger = logging.getLogger(__name__)

RIGID_PARAMETERS: dict[str, str] = {
    "Registration": "MultiResolutionRegistration",
    # recursive pyramids halve the image at each coarser level; elastix's default smoothing pyramids keep every level
    # at full size (4 x 335 MB for one 512 x 512 x 320 float frame, for fixed and moving each)
    "FixedImagePyramid": "FixedRecursiveImagePyramid",
    "MovingImagePyramid": "MovingRecursiveImagePyramid",
    "NumberOfResolutions": "4",
    "Transform": "EulerTransform",
    # rotations (radians) and translations (mm) differ in scale by ~the image radius; elastix estimates the scales
    "AutomaticScalesEstimation": "true",
    # time points of one acquisition share their geometry: start from the identity, not from a centring
    "AutomaticTransformInitialization": "false",
    "Metric": "AdvancedMattesMutualInformation",
    "NumberOfHistogramBins": "32",
    "Optimizer": "AdaptiveStochasticGradientDescent",
    "AutomaticParameterEstimation": "true",
    "MaximumNumberOfIterations": "250",
    "ImageSampler": "RandomCoordinate",
    "NumberOfSpatialSamples": "2048",
    "NewSamplesEveryIteration": "true",
    "CheckNumberOfSamples": "true",
    "MaximumNumberOfSamplingAttempts": "8",
    # elastix's executable seeds its sampler the same way on every run; ITKElastix 0.25 honours the seed too
    "RandomSeed": "121212",
    # with mask_threshold: sample the whole mask at every level (elastix's default erosion by the pyramid's blur
    # empties a thin skull or a small test head at the coarse levels)
    "ErodeMask": "false",
    "Interpolator": "LinearInterpolator",
    # the final resampling: elastix's default cubic B-spline keeps the thin cortex and small vessels sharp
    "Resampler": "DefaultResampler",
    "ResampleInterpolator": "FinalBSplineInterpolator",
    "FinalBSplineInterpolationOrder": "3",
    "HowToCombineTransforms": "Compose",
    "WriteResultImage": "true",
    "ResultImagePixelType": "float",
}
"""The elastix parameters :func:`register_time_points` uses unless told otherwise (values as elastix reads them)."""


def rigid_parameter_map(parameters: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """The elastix parameter map of the time-point registration: :data:`RIGID_PARAMETERS` updated by ``parameters``.

    Implements the registration settings of Section III-B (see the module's docstring for their choice).

    Args:
        parameters: elastix parameters to change or add, e.g. ``{"NumberOfResolutions": 3}``; a value may be a
            string, a number, a bool or a sequence of those (one per resolution). ``None`` changes nothing.

    Returns:
        a ``{name: [value, ...]}`` map of strings, as ``itk.ParameterObject.AddParameterMap`` takes it.

    Raises:
        TypeError: ``parameters`` is not a mapping, or a name is not a string.
        ValueError: ``Transform`` is set to anything but ``EulerTransform`` (the paper's registration is rigid).
    """
    if parameters is not None and not isinstance(parameters, Mapping):
        raise TypeError(f"parameters must be a mapping of elastix parameter names to values, got {parameters!r}.")
    merged: dict[str, list[str]] = {k: [v] for k, v in RIGID_PARAMETERS.items()}
    for name, value in (parameters or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"elastix parameter names must be strings, got {name!r}.")
        values = value if isinstance(value, (list, tuple)) else [value]
        merged[name] = [_elastix_text(v) for v in values]
    if merged["Transform"] != ["EulerTransform"]:
        raise ValueError(
            f"the time-point registration is rigid: Transform must be EulerTransform, got {merged['Transform']}."
        )
    return merged


def _elastix_text(value: Any) -> str:
    """A parameter value as elastix reads it.

    Args:
        value: a bool, number or string.

    Returns:
        bools as ``"true"``/``"false"``, numbers and strings as their text.
    """
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def euler_matrix(rotation: Sequence[float]) -> np.ndarray:
    """The rotation matrix of elastix's ``EulerTransform`` (ITK's ``Euler3DTransform``, ``ComputeZYX`` off).

    ITK rotates about the y axis first, then x, then z: ``R = Rz(rz) @ Rx(rx) @ Ry(ry)``, angles in radians, each
    rotation counter-clockwise looking down its axis (``Rz(pi/2)`` takes the x axis to the y axis).

    Args:
        rotation: ``(rx, ry, rz)`` in radians.

    Returns:
        the ``[3, 3]`` rotation matrix.

    Raises:
        ValueError: ``rotation`` does not have three angles.
    """
    if len(rotation) != 3:
        raise ValueError(f"rotation must be three angles (rx, ry, rz), got {rotation!r}.")
    rx, ry, rz = (float(a) for a in rotation)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    r_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    r_z = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return r_z @ r_x @ r_y


def rigid_transform_points(rigid: Mapping[str, Sequence[float]], points: np.ndarray) -> np.ndarray:
    """Map points (mm) of the reference frame to the moving frame by one frame's recovered rigid motion.

    elastix's transform maps fixed-image points to moving-image points: ``y = R (x - c) + c + t``; the registered frame
    is the moving frame sampled at ``y``, so a structure at ``y`` in the moving frame lands on ``x``.

    Args:
        rigid: one entry of :func:`register_time_points`'s list: ``rotation`` (radians), ``translation`` and ``center``
            (mm, in the frame of ``points``).
        points: ``[N, 3]`` points in mm (voxel index times spacing, origin 0).

    Returns:
        the ``[N, 3]`` mapped points.

    Raises:
        ValueError: ``points`` is not ``[N, 3]``.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got shape {points.shape}.")
    center = np.asarray(rigid["center"], dtype=np.float64)
    translation = np.asarray(rigid["translation"], dtype=np.float64)
    return (points - center) @ euler_matrix(rigid["rotation"]).T + center + translation


def _itk_image(volume: np.ndarray, spacing: Sequence[float]):
    """A float ITK image of an ``[X, Y, Z]`` array.

    Args:
        volume: the ``[X, Y, Z]`` array (any real dtype).
        spacing: voxel size in mm along X, Y, Z.

    Returns:
        an ``itk.Image[itk.F, 3]`` whose index (i, j, k) holds ``volume[i, j, k]``, origin 0, identity directions.
    """
    import itk

    image = itk.image_from_array(np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    return image


def register_time_points(
    image: np.ndarray | torch.Tensor,
    spacing: Sequence[float],
    fixed_index: int = 0,
    parameters: Mapping[str, Any] | None = None,
    number_of_threads: int | None = None,
    mask_threshold: float | None = None,
    fill_value: float | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, list[dict[str, tuple[float, ...]]]]:
    """Rigidly register every time point of a 4D CT to one reference time point with elastix.

    Implements Section III-B's pre-processing (time points t > 0 registered rigidly to t = 0 to correct head
    movement) with the parameters of :func:`rigid_parameter_map`. Each frame is registered to the reference frame
    directly (not to its predecessor, so errors do not accumulate) and resampled once, with elastix's cubic B-spline
    (order 3, ``FinalBSplineInterpolationOrder``), onto the reference frame's grid. The registration works in
    millimetres: voxel index times ``spacing``, origin 0, axes as the array's (a rigid motion in that frame is
    rigid in the scanner's too, whatever the direction cosines).

    Args:
        image: ``[T, X, Y, Z]`` time points first, HU (any real or integer dtype).
        spacing: voxel size in mm along X, Y, Z.
        fixed_index: the reference time point (paper: 0, the first).
        parameters: elastix parameters replacing or adding to :data:`RIGID_PARAMETERS` (e.g. fewer resolutions or
            iterations for small test volumes).
        number_of_threads: threads elastix may use; ``None`` lets ITK choose (all cores).
        mask_threshold: when given, elastix draws its samples only where the reference frame is ``>=`` this value
            (e.g. -200 HU: the head, not the air and the padding outside the field of view, which do not move with
            the head; 300 HU: the skull, which neither moves relative to the brain nor enhances). ``None`` samples
            the whole volume, as elastix does by default.
        fill_value: the value of voxels mapped from outside the moving frame; ``None`` takes each moving frame's
            minimum (air or the scanner's out-of-field padding, whichever the frame holds).
        out: a float32 array of ``image``'s shape to write the result into, which may be ``image`` itself (each
            frame is read before it is overwritten): a 512 x 512 x 320 x 19 CT then needs one 6.4 GB copy, not two.

    Returns:
        ``(registered, rigid)``: the registered ``[T, X, Y, Z]`` float32 array, the reference frame copied
        unchanged; and for each time point a dict with ``rotation`` (rx, ry, rz radians), ``translation`` (mm) and
        ``center`` (mm, the centre of rotation) mapping reference points to moving points
        (:func:`rigid_transform_points`); the identity for the reference frame.

    Raises:
        ValueError: ``image`` is not 4D or has no voxels, ``spacing`` is not three positive numbers,
            ``fixed_index`` is out of range, ``number_of_threads`` is below 1, the mask holds no voxel, or ``out``
            is not a float32 array of ``image``'s shape.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    volume = np.asarray(image)
    if volume.ndim != 4 or volume.size == 0:
        raise ValueError(f"image must be a non-empty [T, X, Y, Z] array, got shape {volume.shape}.")
    spacing = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).ravel())
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive voxel sizes (mm) along X, Y, Z, got {spacing}.")
    n_frames = volume.shape[0]
    if not -n_frames <= fixed_index < n_frames:
        raise ValueError(f"fixed_index must index one of the {n_frames} time points, got {fixed_index}.")
    fixed_index %= n_frames
    if number_of_threads is not None and int(number_of_threads) < 1:
        raise ValueError(f"number_of_threads must be >= 1 or None, got {number_of_threads}.")
    parameter_map = rigid_parameter_map(parameters)

    import itk

    center = tuple(0.5 * (n - 1) * s for n, s in zip(volume.shape[1:], spacing, strict=True))
    identity = {"rotation": (0.0, 0.0, 0.0), "translation": (0.0, 0.0, 0.0), "center": center}
    if out is None:
        registered = np.empty(volume.shape, dtype=np.float32)
    elif not isinstance(out, np.ndarray) or out.shape != volume.shape or out.dtype != np.float32:
        raise ValueError(f"out must be a float32 array of shape {volume.shape}, got {type(out).__name__}.")
    else:
        registered = out
    rigid: list[dict[str, tuple[float, ...]]] = [dict(identity) for _ in range(n_frames)]
    fixed = _itk_image(volume[fixed_index], spacing)
    fixed_mask = None
    if mask_threshold is not None:
        mask = np.asarray(volume[fixed_index] >= mask_threshold, dtype=np.uint8)
        if not mask.any():
            raise ValueError(f"no voxel of time point {fixed_index} is >= mask_threshold {mask_threshold}.")
        fixed_mask = itk.image_from_array(np.ascontiguousarray(mask.transpose(2, 1, 0)))
        fixed_mask.SetSpacing(list(spacing))
    registered[fixed_index] = volume[fixed_index]
    for t in range(n_frames):
        if t == fixed_index:
            continue
        frame = volume[t]
        default = float(np.min(frame)) if fill_value is None else float(fill_value)
        parameter_object = itk.ParameterObject.New()
        parameter_object.AddParameterMap({**parameter_map, "DefaultPixelValue": [repr(default)]})
        method = itk.ElastixRegistrationMethod.New(fixed, _itk_image(frame, spacing))
        method.SetParameterObject(parameter_object)
        method.SetLogToConsole(False)
        if fixed_mask is not None:
            method.SetFixedMask(fixed_mask)
        if number_of_threads is not None:
            method.SetNumberOfThreads(int(number_of_threads))
        method.Update()
        registered[t] = itk.array_from_image(method.GetOutput()).transpose(2, 1, 0)
        result = method.GetTransformParameterObject()
        values = [float(v) for v in result.GetParameter(0, "TransformParameters")]
        rigid[t] = {
            "rotation": tuple(values[:3]),
            "translation": tuple(values[3:6]),
            "center": tuple(float(v) for v in result.GetParameter(0, "CenterOfRotationPoint")),
        }
        logger.info(
            "time point %d: rotation %s rad, translation %s mm", t, rigid[t]["rotation"], rigid[t]["translation"]
        )
    return registered, rigid


class RegisterTimePointsd(MapTransform):
    """Rigidly register the time points (channels) of a 4D CT to one reference time point, or pass it through.

    Implements Section III-B's pre-processing ("Time points t > 0 were rigidly registered to the first time point")
    with :func:`register_time_points`, on the channel-first ``[T, X, Y, Z]`` image (the paper's 19 time points as
    channels). Spacing comes from the MetaTensor's affine (the column norms of its 3 x 3 part). The output keeps the
    input's meta data and affine (registration resamples onto the reference frame's own grid), device and float
    dtype (integers become float32). With ``enabled`` false the dictionary is returned untouched, for data that are
    registered already.

    Args:
        keys: keys of the 4D images to register (the label is not: it is drawn on the registered image).
        enabled: register or not; a bool or the text "true"/"false" a bundle passes from the command line.
        fixed_index: the reference time point (paper: 0).
        parameters: elastix parameters replacing or adding to :data:`RIGID_PARAMETERS`.
        number_of_threads: threads elastix may use (``None``: all cores).
        mask_threshold: see :func:`register_time_points` (``None``: sample the whole volume).
        fill_value: see :func:`register_time_points` (``None``: each frame's minimum).
        allow_missing_keys: don't raise for missing keys.

    Input ``[T, X, Y, Z]`` per key -> output ``[T, X, Y, Z]`` per key.

    Raises:
        ValueError: ``enabled`` is not a yes/no switch, or ``parameters`` sets a transform other than the rigid one.
    """

    def __init__(
        self,
        keys: KeysCollection,
        enabled: bool | str = True,
        fixed_index: int = 0,
        parameters: Mapping[str, Any] | None = None,
        number_of_threads: int | None = None,
        mask_threshold: float | None = None,
        fill_value: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enabled = as_bool(enabled, "enabled")
        self.fixed_index = int(fixed_index)
        rigid_parameter_map(parameters)  # bad parameters fail when the config is built, not on the first image
        self.parameters = parameters
        self.number_of_threads = number_of_threads
        self.mask_threshold = mask_threshold
        self.fill_value = fill_value

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Register each key's time points to the reference time point (nothing when disabled).

        Args:
            data: dictionary holding ``[T, X, Y, Z]`` MetaTensors (or tensors / arrays with a unit spacing).

        Returns:
            the dictionary (the same object when disabled; a copy with the registered images otherwise).
        """
        if not self.enabled:
            return data
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._register(d[key])
        return d

    def _register(self, img: Any) -> Any:
        """Register one key's image.

        Args:
            img: a ``[T, X, Y, Z]`` MetaTensor, tensor or array.

        Returns:
            the registered image, of ``img``'s type, with its meta data, affine, device and (float) dtype.
        """
        spacing = (1.0, 1.0, 1.0)
        if isinstance(img, MetaTensor):
            affine = torch.as_tensor(img.affine).detach().cpu().numpy().astype(np.float64)
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
        registered, _ = register_time_points(
            img,
            spacing,
            fixed_index=self.fixed_index,
            parameters=self.parameters,
            number_of_threads=self.number_of_threads,
            mask_threshold=self.mask_threshold,
            fill_value=self.fill_value,
        )
        if isinstance(img, torch.Tensor):
            dtype = img.dtype if img.is_floating_point() else torch.float32
            out = torch.as_tensor(registered, device=img.device).to(dtype)
            if isinstance(img, MetaTensor):
                return MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
            return out
        return registered
