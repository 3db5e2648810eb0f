"""Command line for the phantom data sets: ``python -m common.phantoms make|tasks ...`` (via ``fire``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.phantoms.dataset import make_dataset
from common.phantoms.registry import PHANTOM_TASKS

__all__ = ["make", "tasks", "main"]


def make(
    task: str,
    out_dir: str,
    n_cases: int,
    seed: int = 0,
    n_validation: int = 0,
    n_test: int = 0,
    dicom: bool = False,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    **generator_kwargs: Any,
) -> str:
    """Make a phantom data set and return the path of its ``dataset.json`` (``fire`` prints it).

    Example: ``python -m common.phantoms make --task abdominal_ct_multiorgan --out_dir DIR --n_cases 8
    --n_validation 2 --shape "[96,96,48]" --spacing "[4,4,5]"``.

    Args:
        task: the task's name (``python -m common.phantoms tasks`` lists them).
        out_dir: the data set folder.
        n_cases: training cases.
        seed: the data set's seed.
        n_validation: validation cases.
        n_test: test cases.
        dicom: also write the test images as DICOM series (one-channel 3D CT tasks).
        shape: array shape, as many entries as the task's spatial dimensions; default the task's.
        spacing: voxel size in mm (and the frame interval in seconds for 3D+time); default the task's.
        generator_kwargs: the task generator's other arguments, e.g. ``--n_frames 20``.

    Returns:
        the path of ``dataset.json``.
    """
    kwargs = {k: v for k, v in (("shape", shape), ("spacing", spacing)) if v is not None}
    kwargs.update(generator_kwargs)
    return str(make_dataset(task, str(out_dir), n_cases, seed, n_validation, n_test, dicom, **kwargs))


def tasks() -> list[str]:
    """List the phantom tasks the generator modules declare.

    Returns:
        the task names, sorted.
    """
    return sorted(PHANTOM_TASKS)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the phantom command line: ``make`` or ``tasks``.

    Args:
        argv: the arguments after the program name; None reads ``sys.argv``.

    Raises:
        SystemExit: with ``error: <message>`` (exit status 1) when the arguments or the output folder are wrong.
    """
    import fire

    try:
        fire.Fire({"make": make, "tasks": tasks}, command=None if argv is None else list(argv))
    except (ValueError, TypeError, OSError) as err:
        raise SystemExit("error: " + " ".join(str(err).split())) from None
