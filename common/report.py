"""End-of-demo summary: the paper's tables from the evaluation, the run times and where every output is.

What to read is taken from the bundle's own configs, never assumed: the ``SegmentationReport`` handler in
``validate#handlers`` of the merged ``train.json`` + ``evaluate.json`` (+ ``demo.json``) names the metrics, the
file-name prefix and the report folder. The configs are read with ``monai.bundle.ConfigParser`` and only those
few ids are evaluated (simple ``@``/``$`` references such as ``"$@eval_datalist_key + '_'"``, plus the configs'
``$import`` statements, which MONAI runs on any resolution); no component is instantiated, so nothing is trained,
loaded or generated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fire
from monai.bundle import ConfigParser

from common.metrics.summary import format_table

__all__ = ["EvaluationOutputs", "demo_summary", "find_evaluation_outputs"]

REPORT_HANDLER = "SegmentationReport"
"""Last part of the ``_target_`` of the report handler looked for (``common.handlers.SegmentationReport``)."""
TEMPORAL_HANDLER = "TemporalSegmentationReport"
"""Last part of the ``_target_`` of a 3D+time report handler, whose summary is shown too (cardiac 4D bundle)."""

_HANDLERS_ID = "validate#handlers"


@dataclass(frozen=True)
class EvaluationOutputs:
    """Where a bundle's evaluation, training and inference write, as its configs say.

    Attributes:
        report_dir: the ``SegmentationReport`` handler's ``output_dir``.
        prefix: its file-name prefix, e.g. ``"test_"``.
        metric_names: its ``metric_names`` (the handler's default when the config names none).
        log_dir: the top-level ``output_dir`` (TensorBoard logs), or None when the config has none.
        model_file: the evaluated checkpoint (``ckpt_file``), or None when the config has none.
        inference_dir: the ``output_dir`` of ``inference.json`` (+ ``demo.json``), or None without it.
        temporal_summaries: the summary JSON of each enabled ``TemporalSegmentationReport`` (frame Dice, temporal
            smoothness, ejection fraction), empty without one.
    """

    report_dir: Path
    prefix: str
    metric_names: tuple[str, ...]
    log_dir: Path | None = None
    model_file: Path | None = None
    inference_dir: Path | None = None
    temporal_summaries: tuple[Path, ...] = ()


def _parser(files: Sequence[Path], bundle_dir: str) -> ConfigParser:
    """A parser of the merged ``files`` (later ones override earlier ones), ``bundle_root`` set to ``bundle_dir``.

    Returns:
        the parser, nothing parsed or instantiated yet.
    """
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    if "bundle_root" in parser:
        parser["bundle_root"] = bundle_dir
    return parser


def _is_disabled(handler: dict[str, Any]) -> bool:
    """Whether a raw component config is switched off (``_disabled_``, read as MONAI's ``ConfigComponent`` does).

    Returns:
        True for ``true``/``"true"``.
    """
    flag = handler.get("_disabled_", False)
    return flag.strip().lower() == "true" if isinstance(flag, str) else bool(flag)


def _optional_path(parser: ConfigParser, config_id: str) -> Path | None:
    """The evaluated config value ``config_id`` as a path.

    Returns:
        the path, or None when the config has no such id.
    """
    return Path(str(parser.get_parsed_content(config_id))) if config_id in parser else None


def find_evaluation_outputs(bundle_dir: str, config_files: Sequence[str] | None = None) -> EvaluationOutputs:
    """Read from a bundle's configs where its evaluation report is and what it holds, instantiating nothing.

    Args:
        bundle_dir: the bundle folder; it replaces the configs' ``bundle_root``, so paths derive from it.
        config_files: the evaluation's config files in merge order; default ``configs/train.json``,
            ``configs/evaluate.json`` and ``configs/demo.json`` (the last only where it exists) of ``bundle_dir``.
            ``inference.json`` (+ ``demo.json``) is read beside them, where it exists, for the label maps.

    Returns:
        the report folder, prefix and metric names, and the log, model and inference locations.

    Raises:
        FileNotFoundError: when a config file is missing.
        ValueError: when the merged config has no enabled ``SegmentationReport`` in ``validate#handlers``.
    """
    bundle = Path(bundle_dir)
    configs = bundle / "configs"
    demo = [configs / "demo.json"] if (configs / "demo.json").is_file() else []
    if config_files is None:
        files = [configs / "train.json", configs / "evaluate.json", *demo]
    else:
        files = [Path(f) for f in ([config_files] if isinstance(config_files, str) else config_files)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"config files not found: {missing}")
    parser = _parser(files, bundle_dir)
    handlers = parser.get(_HANDLERS_ID, []) or []
    enabled = [
        (i, str(h.get("_target_", "")).rsplit(".", 1)[-1])
        for i, h in enumerate(handlers)
        if isinstance(h, dict) and not _is_disabled(h)
    ]
    index = next((i for i, name in enabled if name == REPORT_HANDLER), None)
    if index is None:
        raise ValueError(
            f"no enabled {REPORT_HANDLER} in '{_HANDLERS_ID}' of {[str(f) for f in files]}; the evaluation config "
            "must attach one to report the paper's measures."
        )
    handler_id = f"{_HANDLERS_ID}#{index}"
    handler = handlers[index]
    if "metric_names" in handler:
        names = parser.get_parsed_content(f"{handler_id}#metric_names")
    else:  # the handler's own default, imported only here (it pulls in ignite and matplotlib)
        from common.handlers.segmentation_report import DEFAULT_METRIC_NAMES

        names = DEFAULT_METRIC_NAMES
    metric_names = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
    prefix = str(parser.get_parsed_content(f"{handler_id}#prefix")) if "prefix" in handler else ""
    inference_dir = None
    if (configs / "inference.json").is_file():
        inference = _parser([configs / "inference.json", *demo], bundle_dir)
        inference_dir = _optional_path(inference, "output_dir")
    temporal = []
    for i, name in enabled:
        if name == TEMPORAL_HANDLER:
            h = f"{_HANDLERS_ID}#{i}"
            t_prefix = str(parser.get_parsed_content(f"{h}#prefix")) if "prefix" in handlers[i] else "temporal"
            temporal.append(Path(str(parser.get_parsed_content(f"{h}#output_dir"))) / f"{t_prefix}_summary.json")
    return EvaluationOutputs(
        report_dir=Path(str(parser.get_parsed_content(f"{handler_id}#output_dir"))),
        prefix=prefix,
        metric_names=metric_names,
        log_dir=_optional_path(parser, "output_dir"),
        model_file=_optional_path(parser, "ckpt_file"),
        inference_dir=inference_dir,
        temporal_summaries=tuple(temporal),
    )


def _from_json(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row read back from JSON.

    Returns:
        the row with ``null`` (how the report writes NaN) as NaN.
    """
    return {k: math.nan if v is None else v for k, v in row.items()}


def _table(summary_file: Path, metric: str) -> str:
    """The paper's table of one metric's summary JSON, in percent for a ratio, else as is with its unit.

    Returns:
        the table text, or a line saying the file is missing.
    """
    if not summary_file.is_file():
        return f"no evaluation summary for {metric} at {summary_file}"
    doc = json.loads(summary_file.read_text())
    table = {name: _from_json(row) for name, row in doc["summary"].items()}
    measure = str(doc.get("measure") or ("Dice" if "dice" in metric.lower() else metric))
    unit = doc.get("unit")  # null (or absent, in reports written before units were recorded): a ratio in [0, 1]
    heading = f"{measure} ({unit})" if unit else measure
    title = f"Phantom held-out cases (n={doc['n_cases']}), {metric}"
    return format_table(table, title=title, measure=heading, percent=unit is None)


def _temporal_table(summary_file: Path) -> str:
    """The 4D measures of a ``TemporalSegmentationReport`` summary: Table 2's columns and the ejection fraction.

    Returns:
        the table text, or a line saying the file is missing.
    """
    if not summary_file.is_file():
        return f"no temporal summary at {summary_file}"
    doc = json.loads(summary_file.read_text())
    measures = doc["measures"]
    columns = [("frame_dice", "Dice", "{:.3f}"), ("smoothness_l2", "smoothness L2", "{:.2f}"),
               ("surface_distance", "surface (mm)", "{:.2f}")]  # fmt: skip
    names = [n for n in measures["frame_dice"]["summary"] if n != "Total Avg."]
    lines = [f"Phantom held-out sequences (n={doc['n_cases']}), Table 2's measures (mean over sequences)"]
    lines.append(f"{'':16}" + "".join(f"{label:>16}" for _, label, _ in columns))
    for name in names:
        cells = []
        for key, _, fmt in columns:
            value = _from_json(measures.get(key, {}).get("summary", {}).get(name, {})).get("avg", math.nan)
            cells.append("n/a" if math.isnan(value) else fmt.format(value))
        lines.append(f"{name:16}" + "".join(f"{c:>16}" for c in cells))
    detection = doc.get("ef_detection")
    if detection:
        d = _from_json(detection)
        lines.append(
            f"ejection fraction: mean absolute error {d['mae']:.1f} percentage points over {d['n_cases']} sequences; "
            f"reduced EF (< {d['threshold']:g} %) detected with sensitivity {d['sensitivity']:.2f}, specificity "
            f"{d['specificity']:.2f}"
        )
    return "\n".join(lines)


def demo_summary(
    bundle_dir: str,
    config_files: Sequence[str] | None = None,
    train_seconds: float | None = None,
    eval_seconds: float | None = None,
    infer_seconds: float | None = None,
) -> str:
    """Text of the demo's closing summary for ``bundle_dir``: evaluation tables, timings, output locations.

    Args:
        bundle_dir: the bundle folder, e.g. ``bundles/abdominal_ct_multiorgan_segmentation``.
        config_files: the evaluation's config files in merge order (see :func:`find_evaluation_outputs`).
        train_seconds: wall-clock time of training, if measured.
        eval_seconds: wall-clock time of the evaluation, if measured.
        infer_seconds: wall-clock time of inference, if measured.

    Returns:
        the summary: one table per reported metric, the times, then the model, report files, label maps and
        logs with their paths.
    """
    outputs = find_evaluation_outputs(bundle_dir, config_files)
    out, prefix = outputs.report_dir, outputs.prefix
    lines = [_table(out / f"{prefix}{metric}_summary.json", metric) for metric in outputs.metric_names]
    lines += [_temporal_table(f) for f in outputs.temporal_summaries]
    times = [(n, s) for n, s in (("train", train_seconds), ("evaluate", eval_seconds), ("infer", infer_seconds)) if s]
    if times:
        lines.append("time: " + ", ".join(f"{n} {float(s):.0f} s" for n, s in times))
    lines.append("outputs:")
    if outputs.model_file is not None:
        lines.append(f"  model (state_dict)   {outputs.model_file}")
    reports = {
        f for metric in outputs.metric_names for f in out.glob(f"{prefix}{metric}_*") if f.suffix in (".csv", ".json")
    }
    temporal_files = {
        f for t in outputs.temporal_summaries for f in t.parent.glob(t.name[: -len("summary.json")] + "*")
    }
    for f in sorted({*reports, *out.glob(f"{prefix}*.png"), *temporal_files}):
        lines.append(f"  report               {f}")
    seg = sorted(outputs.inference_dir.glob("*.nii.gz")) if outputs.inference_dir is not None else []
    if seg:
        lines.append(f"  label maps ({len(seg):2d})      {outputs.inference_dir}/")
    if outputs.log_dir is not None:
        lines.append(f"  TensorBoard logs     {outputs.log_dir}  (tensorboard --logdir {outputs.log_dir})")
    return "\n".join(lines)


def main(bundle_dir: str, **kwargs: Any) -> None:
    """Print :func:`demo_summary` (command line: ``python -m common.report BUNDLE_DIR [--train_seconds S ...]``).

    Args:
        bundle_dir: the bundle folder.
        kwargs: the other arguments of :func:`demo_summary`.
    """
    print(demo_summary(bundle_dir, **kwargs))  # noqa: T201 - the command's output is this text, for the user


if __name__ == "__main__":
    fire.Fire(main)
