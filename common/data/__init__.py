"""Reading, datalists, input checks and their error type (BUNDLE_CONTRACT.md, "Errors").

Modules, MONAI's way (plain functions apart from the dictionary transforms that wrap them):

- ``errors``: :py:class:`BundleInputError`, the one error type for a user's bad files or datalists, and
  :py:func:`find_bundle_input_error`, which finds it behind MONAI's wrapping ``RuntimeError``.
- ``checks``: the input checks as plain functions on shapes, affines and arrays.
- ``dictionary``: the dictionary transforms for a transform chain: ``LoadImageCheckedd`` and the ``Check*d`` checks.
- ``io``: image headers without voxels (:py:func:`read_image_header`), voxels, and ``LoadImageChecked``.
- ``datalist``: MSD-style datalists (:py:func:`load_datalist`) and the up-front header check
  (:py:func:`preflight_check`).
- ``inputs``: listing inference inputs; ``writers``: atomic writes; ``messages``: the checks' shared wording.
"""

from .checks import check_channels, check_finite_values, check_label_values, check_spatial_match
from .datalist import load_datalist, preflight_check
from .dictionary import CheckFiniteValuesd, CheckInputd, CheckLabelValuesd, CheckShapeMatchd, LoadImageCheckedd
from .errors import BundleInputError, find_bundle_input_error
from .inputs import is_dicom_series_dir, list_inputs, require_file
from .io import EXPECTED_IMAGE, NIFTI_SUFFIXES, ImageHeader, LoadImageChecked, read_image_array, read_image_header
from .writers import AtomicNibabelWriter, atomic_path

__all__ = [
    "AtomicNibabelWriter",
    "atomic_path",
    "NIFTI_SUFFIXES",
    "is_dicom_series_dir",
    "list_inputs",
    "require_file",
    "EXPECTED_IMAGE",
    "BundleInputError",
    "CheckFiniteValuesd",
    "CheckInputd",
    "CheckLabelValuesd",
    "CheckShapeMatchd",
    "ImageHeader",
    "LoadImageChecked",
    "LoadImageCheckedd",
    "check_channels",
    "check_finite_values",
    "check_label_values",
    "check_spatial_match",
    "find_bundle_input_error",
    "load_datalist",
    "preflight_check",
    "read_image_array",
    "read_image_header",
]
