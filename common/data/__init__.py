"""Reading, datalists, input checks and their error type (BUNDLE_CONTRACT.md, "Errors").

Modules, MONAI's way (plain functions apart from the dictionary transforms that wrap them):

- ``errors``: :py:class:`BundleInputError`, the one error type for a user's bad files or datalists, and
  :py:func:`find_bundle_input_error`, which finds it behind MONAI's wrapping ``RuntimeError``.
- ``checks``: the input checks as plain functions on shapes, affines and arrays.
- ``dictionary``: the dictionary transforms for a transform chain: ``LoadImageCheckedd`` and the ``Check*d`` checks.
- ``io``: image headers without voxels (:py:func:`read_image_header`), voxels, and ``LoadImageChecked``.
- ``folds``: cross-validation folds of a datalist (:py:func:`fold_cases`), with a fixed, documented rule;
- ``datalist``: MSD-style datalists (:py:func:`load_datalist`) and the up-front header check
  (:py:func:`preflight_check`).
- ``inputs``: listing inference inputs; ``writers``: atomic writes; ``messages``: the checks' shared wording.
- ``dicom``: one DICOM series per folder, slices evenly spaced (:py:func:`check_dicom_series`).
- ``switches``: :py:func:`as_bool`, yes/no config switches as the command line gives them (``"true"``).
- ``triage``: batch inference that writes the good inputs and names the bad ones (:py:class:`InputTriage`, the
  ``skip_bad_inputs`` switch).
- ``excepthook``: :py:func:`install_error_hook`, so a failed run's last line is its ``BundleInputError``;
  ``show_input_error_last`` installs it when imported (from a config's ``imports``).
"""

from .checks import (
    check_channels,
    check_finite_values,
    check_foreground,
    check_label_values,
    check_modality,
    check_spacing,
    check_spatial_match,
)
from .datalist import load_datalist, preflight_check, preflight_partition, select_channel_files
from .dicom import DicomSeries, check_dicom_series
from .dictionary import (
    CheckFiniteValuesd,
    CheckForegroundd,
    CheckInputd,
    CheckLabelValuesd,
    CheckShapeMatchd,
    LoadImageCheckedd,
)
from .errors import BundleInputError, SkippedInputsError, find_bundle_input_error
from .excepthook import InputErrorHook, input_error_summary, install_error_hook
from .folds import fold_cases, fold_indices, no_fold, write_folds
from .inputs import is_dicom_series_dir, list_inputs, require_file, require_output_dir
from .io import EXPECTED_IMAGE, NIFTI_SUFFIXES, ImageHeader, LoadImageChecked, read_image_array, read_image_header
from .served_output import ServedLabelPath, WriteServedLabelMapd
from .switches import as_bool
from .triage import InputTriage, SkipBadCase
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
    "fold_cases",
    "fold_indices",
    "no_fold",
    "write_folds",
    "InputErrorHook",
    "input_error_summary",
    "install_error_hook",
    "load_datalist",
    "select_channel_files",
    "preflight_check",
    "read_image_array",
    "read_image_header",
    "CheckForegroundd",
    "DicomSeries",
    "InputTriage",
    "SkipBadCase",
    "SkippedInputsError",
    "check_dicom_series",
    "check_foreground",
    "check_modality",
    "check_spacing",
    "preflight_partition",
    "require_output_dir",
    "as_bool",
    "ServedLabelPath",
    "WriteServedLabelMapd",
]
