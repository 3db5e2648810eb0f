"""End-of-demo summary: the paper's table from the evaluation, the run times and where every output is."""

from __future__ import annotations

import json
import math
from pathlib import Path

import fire

from common.metrics.summary import format_table

__all__ = ["demo_summary"]


def _from_json(row: dict) -> dict:
    return {k: math.nan if v is None else v for k, v in row.items()}


def demo_summary(
    bundle_dir: str,
    eval_dir: str = "eval",
    prefix: str = "test_",
    metric: str = "val_mean_dice",
    train_seconds: float | None = None,
    eval_seconds: float | None = None,
    infer_seconds: float | None = None,
) -> str:
    """Text of the demo's closing summary for ``bundle_dir``: evaluation table, timings, output locations.

    Args:
        bundle_dir: the bundle folder, e.g. ``bundles/abdominal_ct_multiorgan_segmentation``.
        eval_dir: folder (relative to the bundle) where evaluate.json wrote its report.
        prefix: file-name prefix of the evaluated split's report files.
        metric: metric name used by the report files.
        train_seconds, eval_seconds, infer_seconds: wall-clock times of the three steps, if measured.
    """
    bundle = Path(bundle_dir)
    out = bundle / eval_dir
    summary_file = out / f"{prefix}{metric}_summary.json"
    lines = []
    if summary_file.is_file():
        doc = json.loads(summary_file.read_text())
        table = {name: _from_json(row) for name, row in doc["summary"].items()}
        lines.append(format_table(table, title=f"Phantom held-out cases (n={doc['n_cases']}), {metric}"))
    else:
        lines.append(f"no evaluation summary at {summary_file}")
    times = [(n, s) for n, s in (("train", train_seconds), ("evaluate", eval_seconds), ("infer", infer_seconds)) if s]
    if times:
        lines.append("time: " + ", ".join(f"{n} {float(s):.0f} s" for n, s in times))
    lines.append("outputs:")
    lines.append(f"  model (state_dict)   {bundle / 'models' / 'model.pt'}")
    for f in sorted({*out.glob(f"{prefix}*.csv"), *out.glob(f"{prefix}*.json"), *out.glob(f"{prefix}*.png")}):
        lines.append(f"  report               {f}")
    seg = sorted((out / "inference").glob("*.nii.gz"))
    if seg:
        lines.append(f"  label maps ({len(seg):2d})      {out / 'inference'}/")
    lines.append(f"  TensorBoard logs     {out}  (tensorboard --logdir {out})")
    return "\n".join(lines)


def main(bundle_dir: str, **kwargs) -> None:
    """Print :func:`demo_summary` (command line: ``python -m common.report BUNDLE_DIR [--train_seconds S ...]``)."""
    print(demo_summary(bundle_dir, **kwargs))


if __name__ == "__main__":
    fire.Fire(main)
