"""Rigidly register the time points of a 4D CT perfusion NIfTI to its first time point (paper Section III-B).

    python scripts/register_ctp.py IN.nii.gz OUT.nii.gz [--overwrite] [--threads N] [--fixed-index 0]
        [--mask-threshold HU] [--fill-value HU] [--set NAME=VALUE ...]

reads an (X, Y, Z, T) NIfTI with nibabel, registers every time point to time point ``--fixed-index`` with
``common.transforms.registration.register_time_points`` (elastix, rigid Euler transform, Mattes mutual information,
4 resolutions; see that module for the parameters and why), and writes an (X, Y, Z, T) NIfTI with the input's affine
and header: integer data keep their on-disk type (rounded, clipped to the type's range, the input's scaling kept),
anything else is written as float32. The recovered motion of each time point is printed (rotation in degrees,
translation in mm, of the map from reference points to moving points).

An existing output is refused unless ``--overwrite``; the output is written to a temporary file in its own folder
and renamed into place, so an interrupted run leaves no half-written file. ``--set`` changes an elastix parameter,
e.g. ``--set MaximumNumberOfIterations=500 --set NumberOfResolutions=3``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["main", "register_nifti"]


def _suffix(path: Path) -> str:
    """The NIfTI suffix of ``path``, which nibabel reads the format from.

    Args:
        path: a file name.

    Returns:
        ``.nii.gz`` for a gzipped name, else the last suffix.
    """
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def register_nifti(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    overwrite: bool = False,
    fixed_index: int = 0,
    number_of_threads: int | None = None,
    mask_threshold: float | None = None,
    fill_value: float | None = None,
    parameters: dict[str, str | list[str]] | None = None,
) -> list[dict[str, tuple[float, ...]]]:
    """Register the time points of the 4D NIfTI ``input_path`` and write the result to ``output_path``.

    Args:
        input_path: an (X, Y, Z, T) NIfTI.
        output_path: the registered NIfTI (``.nii`` or ``.nii.gz``).
        overwrite: replace an existing ``output_path``.
        fixed_index: the reference time point (paper: 0).
        number_of_threads: threads elastix may use (``None``: all cores).
        mask_threshold: sample only where the reference frame is >= this value (HU); ``None``: everywhere.
        fill_value: the value of voxels mapped from outside a frame; ``None``: the frame's minimum.
        parameters: elastix parameters replacing the defaults.

    Returns:
        the per-time-point rigid parameters of ``register_time_points``.

    Raises:
        FileExistsError: ``output_path`` exists and ``overwrite`` is false.
        FileNotFoundError: ``input_path`` does not exist.
        ValueError: the input is not 4D, or the output name does not end in ``.nii`` or ``.nii.gz``.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass --overwrite to replace it.")
    if not input_path.is_file():
        raise FileNotFoundError(f"{input_path}: no such file.")
    if _suffix(output_path) not in (".nii", ".nii.gz"):
        raise ValueError(f"{output_path}: the output must be a .nii or .nii.gz file.")
    from common.transforms.registration import register_time_points

    img = nib.load(input_path)
    if len(img.shape) != 4:
        raise ValueError(f"{input_path}: expected an (X, Y, Z, T) image, found shape {img.shape}.")
    on_disk = np.dtype(img.get_data_dtype())
    slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
    # a [T, X, Y, Z] view of the one float copy, which the registration overwrites frame by frame
    frames = np.moveaxis(img.get_fdata(dtype=np.float32, caching="unchanged"), -1, 0)
    registered, rigid = register_time_points(
        frames,
        img.header.get_zooms()[:3],
        fixed_index=fixed_index,
        parameters=parameters,
        number_of_threads=number_of_threads,
        mask_threshold=mask_threshold,
        fill_value=fill_value,
        out=frames,
    )
    data = np.moveaxis(registered, 0, -1)
    header = img.header.copy()
    if np.issubdtype(on_disk, np.integer):
        info = np.iinfo(on_disk)
        stored = np.clip(np.rint((data - inter) / slope), info.min, info.max).astype(on_disk)
        out_img = nib.Nifti1Image(stored, img.affine, header=header)
        out_img.header.set_slope_inter(slope, inter)
    else:
        out_img = nib.Nifti1Image(data.astype(np.float32, copy=False), img.affine, header=header)
        out_img.set_data_dtype(np.float32)
    fd, tmp = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=_suffix(output_path), dir=output_path.parent)
    os.close(fd)
    try:
        nib.save(out_img, tmp)
        os.replace(tmp, output_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return rigid


def _parse_set(items: list[str]) -> dict[str, str | list[str]]:
    """Elastix parameters from ``--set`` options.

    Args:
        items: ``["Name=value", ...]``; a value with spaces is several values (one per resolution).

    Returns:
        ``{name: value or [values]}``.

    Raises:
        ArgumentTypeError: an item is not ``NAME=VALUE``.
    """
    parameters: dict[str, str | list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"--set takes NAME=VALUE, got {item!r}.")
        values = value.split()
        parameters[name.strip()] = values if len(values) > 1 else value.strip()
    return parameters


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module's docstring).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        the exit status: 0 on success (argparse exits with 2 on a usage error or an existing output).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="(X, Y, Z, T) NIfTI")
    parser.add_argument("output", help="registered (X, Y, Z, T) NIfTI")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--fixed-index", type=int, default=0, help="reference time point (default 0, the first)")
    parser.add_argument("--threads", type=int, default=None, help="threads for elastix (default: all cores)")
    parser.add_argument("--mask-threshold", type=float, default=None, help="sample only where frame >= this (HU)")
    parser.add_argument("--fill-value", type=float, default=None, help="outside value (default: frame minimum)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="elastix parameter")
    args = parser.parse_args(argv)
    try:
        parameters = _parse_set(args.set)
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    if Path(args.output).exists() and not args.overwrite:
        parser.error(f"{args.output} exists; pass --overwrite to replace it.")
    rigid = register_nifti(
        args.input,
        args.output,
        overwrite=args.overwrite,
        fixed_index=args.fixed_index,
        number_of_threads=args.threads,
        mask_threshold=args.mask_threshold,
        fill_value=args.fill_value,
        parameters=parameters or None,
    )
    print("time point  rotation x, y, z (degrees)   translation x, y, z (mm)")
    for t, r in enumerate(rigid):
        rot = " ".join(f"{np.degrees(a):7.3f}" for a in r["rotation"])
        tra = " ".join(f"{v:7.3f}" for v in r["translation"])
        print(f"{t:10d}  {rot}   {tra}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
