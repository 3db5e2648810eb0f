"""Reading, datalists, input checks and their error type (BUNDLE_CONTRACT.md, "Errors")."""

from .checks import (
    CheckFiniteValuesd,
    CheckInputd,
    CheckLabelValuesd,
    CheckShapeMatchd,
    LoadImageCheckedd,
    check_channels,
    check_finite_values,
    check_label_values,
    check_spatial_match,
    find_bundle_input_error,
)
from .datalist import load_datalist, preflight_check
from .errors import BundleInputError
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
