"""Ignite handler running the healthy-brain test of Kayalıbay et al. 2017 (section 4.2, Table 6) on an evaluation."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine
from monai.networks.utils import eval_mode
from monai.utils import convert_to_numpy, string_list_all_gather

from common.data.writers import write_files_atomically
from common.handlers.report_base import EpochReport, as_items, case_name
from common.metrics.brats_regions import REGIONS, brain_mask, mirror_healthy_hemisphere, specificity, tumour_side
from common.metrics.segmentation_report import json_safe

__all__ = ["PAPER_TABLE6", "HealthyBrainSpecificity"]

logger = logging.getLogger(__name__)

PAPER_TABLE6 = {"whole": 0.9927, "core": 0.9992, "enhancing": 0.9993}
"""Kayalıbay et al. 2017, Table 6: mean specificity of their BraTS model on the synthetic healthy brains."""

CSV_COLUMNS = ("case", "side", "mirrored", *REGIONS)

DESCRIPTION = (
    "Healthy-brain test (Kayalibay et al. 2017, section 4.2, Table 6): for each case whose reference tumour lies "
    "in one hemisphere, the tumour-free hemisphere of the pre-processed image is mirrored about the mid-sagittal "
    "plane onto the other, the network(s) predict on it (softmax probabilities averaged over the networks, argmax), "
    "and the specificity of each region is the fraction of brain voxels (any modality non-zero) predicted outside it."
)


class HealthyBrainSpecificity(EpochReport):
    """Ignite handler: the healthy-brain test of Kayalıbay et al. 2017, section 4.2, Table 6, on an evaluator.

    The paper: "synthetic healthy brain images are produced by mirroring one hemisphere of the brain that does not
    include any voxels labelled as unhealthy in the ground truth, for all images where such an operation is
    possible", and reports the specificity of each BraTS region (whole 0.9927, core 0.9992, enhancing 0.9993) on
    them. Per iteration, each case of ``engine.state.batch`` (a collated dict or the evaluator's decollated list;
    ``image`` ``[C, *spatial]``, ``label`` ``[1, *spatial]`` integer map in the BraTS 2015 numbering 0-4, not
    one-hot) is mirrored with :func:`common.metrics.brats_regions.mirror_healthy_hemisphere`; a case whose tumour
    crosses the plane or is absent is recorded as skipped with its :func:`~common.metrics.brats_regions.tumour_side`.
    The networks (``engine.networks`` of a MONAI ``EnsembleEvaluator``, else ``[engine.network]``) predict on the
    mirrored image through ``engine.inferer``, each in eval mode without gradients (under ``torch.autocast`` on the
    engine's device type when ``engine.amp``); their softmax probabilities over the channels are averaged, as the
    bundle's ensemble does, and the argmax is scored by :func:`~common.metrics.brats_regions.specificity`.

    Choices the paper leaves open:

    * the mirroring happens in the pre-processed (cropped, intensity-normalised) array the network receives, not
      in the original scan;
    * the mid-sagittal plane is the array's centre along ``axis`` unless ``midplane`` is given: the bundle crops
      centred on the brain, so the array centre is the brain's;
    * specificity is counted over the brain, the voxels where any modality of the mirrored image is non-zero
      (:func:`~common.metrics.brats_regions.brain_mask`; BraTS images are skull-stripped with a zero background);
      the paper does not say whether the background was counted, which would only raise the figures.

    At ``EPOCH_COMPLETED`` the records of every rank are gathered; each rank puts the mean over the mirrored cases
    into ``engine.state.metrics[f"{metric_name}_{region}"]`` (NaN when no case qualified) for ``StatsHandler``
    (attach this handler before it so the values exist when it logs), and rank ``save_rank`` writes, atomically:

    * ``<prefix>healthy_specificity.csv``: one row per case: ``case, side, mirrored, whole, core, enhancing``
      (``side`` low/high/both/none, ``mirrored`` yes/no, empty specificities for a skipped case);
    * ``<prefix>healthy_specificity.json``: ``n_cases``, ``n_mirrored``, per region ``mean`` and ``std``
      (population, ddof 0; ``null`` when no case qualified) over the mirrored cases, the paper's Table 6 figures,
      the axis, midplane and a one-line description of the procedure;

    and logs one INFO line with the means.

    Args:
        output_dir: folder of the two files; created if missing.
        prefix: prefix of both file names, e.g. ``"test_"``.
        image_key: key of the image in the batch dicts.
        label_key: key of the reference label map in the batch dicts.
        axis: the left-right spatial axis (0 for the first spatial axis of ``[C, X, Y, Z]``).
        midplane: array position of the mid-sagittal plane along ``axis`` (a whole or half index); ``None``: the
            array's centre ``(n - 1) / 2``.
        metric_name: stem of the ``engine.state.metrics`` keys.
        save_rank: the rank that writes the files in a distributed run.

    Raises:
        ValueError: a negative ``axis`` or ``save_rank``, a prefix holding a path separator, or an empty
            ``metric_name``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        prefix: str = "",
        image_key: str = "image",
        label_key: str = "label",
        axis: int = 0,
        midplane: float | None = None,
        metric_name: str = "healthy_specificity",
        save_rank: int = 0,
    ) -> None:
        if int(axis) < 0:
            raise ValueError(f"axis must be a spatial axis index >= 0, got {axis}.")
        if int(save_rank) < 0:
            raise ValueError(f"save_rank must be an integer >= 0, got {save_rank}.")
        if not isinstance(prefix, str) or os.path.basename(prefix) != prefix or prefix in (".", ".."):
            raise ValueError(f"prefix becomes part of a file name and must not hold a path separator, got {prefix!r}.")
        if not metric_name:
            raise ValueError("metric_name must be a non-empty string.")
        self.output_dir = str(output_dir)
        self.prefix = prefix
        self.image_key = image_key
        self.label_key = label_key
        self.axis = int(axis)
        self.midplane = None if midplane is None else float(midplane)
        self.metric_name = str(metric_name)
        self.save_rank = int(save_rank)
        self._records: list[dict[str, Any]] = []

    @property
    def paths(self) -> tuple[str, str]:
        """The CSV and JSON files written.

        Returns:
            ``(<output_dir>/<prefix>healthy_specificity.csv, <output_dir>/<prefix>healthy_specificity.json)``.
        """
        base = os.path.join(self.output_dir, f"{self.prefix}healthy_specificity")
        return f"{base}.csv", f"{base}.json"

    def _started(self, _engine: Engine) -> None:
        """Clear the records of the previous epoch."""
        self._records = []

    def iteration_completed(self, engine: Engine) -> None:
        """Mirror each case of this iteration, predict on the healthy image and record its specificities.

        Args:
            engine: MONAI ``SupervisedEvaluator`` or ``EnsembleEvaluator`` whose ``state.batch`` holds the cases;
                a case that lacks the image or label, has a one-hot label or shapes that do not fit raises
                ``ValueError`` (from ``_arrays``).
        """
        for item in as_items(engine.state.batch):
            name = case_name(item, self.image_key, len(self._records))
            image, label = self._arrays(item, name)
            side = tumour_side(label, self.axis, self.midplane)
            healthy = mirror_healthy_hemisphere(image, label, self.axis, self.midplane)
            record: dict[str, Any] = {"case": name, "side": side, "mirrored": healthy is not None}
            if healthy is not None:
                prediction = self._predict(engine, healthy)
                record.update(specificity(prediction, brain_mask(healthy)))
            self._records.append(record)

    def _arrays(self, item: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The case's image ``[C, *spatial]`` and integer label map ``[*spatial]``.

        Returns:
            the image (its own dtype) and the label map (int64).

        Raises:
            ValueError: when the item is not a dict holding both keys, the label has several channels (one-hot),
                the spatial shapes differ or ``axis`` is not one of them.
        """
        if not isinstance(item, Mapping) or self.image_key not in item or self.label_key not in item:
            found = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise ValueError(
                f"case '{name}': batch holds {found}; the healthy-brain test needs dicts with '{self.image_key}' "
                f"and '{self.label_key}'."
            )
        image = convert_to_numpy(item[self.image_key])
        label = convert_to_numpy(item[self.label_key])
        if label.ndim == image.ndim:
            if label.shape[0] != 1:
                raise ValueError(
                    f"case '{name}': '{self.label_key}' must be a single-channel integer label map (BraTS 2015 "
                    f"numbering 0-4), not one-hot; got shape {label.shape}."
                )
            label = label[0]
        if image.ndim < 2 or label.shape != image.shape[1:]:
            raise ValueError(
                f"case '{name}': image {image.shape} must be [C, *spatial] with the label's spatial shape "
                f"{label.shape}."
            )
        if self.axis >= label.ndim:
            raise ValueError(f"axis={self.axis} is not a spatial axis of case '{name}' (shape {label.shape}).")
        return image, np.rint(label).astype(np.int64)

    @staticmethod
    def _predict(engine: Engine, healthy: np.ndarray) -> np.ndarray:
        """The networks' label map of one mirrored image: softmax averaged over the networks, argmax.

        Returns:
            the ``[*spatial]`` int64 label map.
        """
        networks = list(engine.networks) if hasattr(engine, "networks") else [engine.network]
        device = torch.device(engine.state.device)
        x = torch.from_numpy(np.ascontiguousarray(healthy))[None].to(device)
        amp = bool(getattr(engine, "amp", False))
        total = None
        for net in networks:
            autocast = (
                torch.autocast(device.type, **(getattr(engine, "amp_kwargs", None) or {})) if amp else nullcontext()
            )
            with eval_mode(net), autocast:  # eval_mode also disables gradients
                logits = engine.inferer(x, net)
            probabilities = torch.softmax(torch.as_tensor(logits).float(), dim=1)
            total = probabilities if total is None else total + probabilities
        mean = total / len(networks)
        return torch.argmax(mean[0], dim=0).cpu().numpy().astype(np.int64)

    def _gathered(self, world_size: int) -> list[dict[str, Any]]:
        """Every rank's records (in rank order).

        Returns:
            the records.
        """
        if world_size <= 1:
            return list(self._records)
        lines = string_list_all_gather(strings=[json.dumps(r) for r in self._records])
        return [json.loads(line) for line in lines]

    def _summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
        """Per region the mean and population std over the mirrored cases.

        Returns:
            ``{region: {"mean": ..., "std": ...}}``, NaN when no case was mirrored.
        """
        mirrored = [r for r in records if r["mirrored"]]
        summary = {}
        for region in REGIONS:
            values = np.array([r[region] for r in mirrored], dtype=np.float64)
            finite = values[np.isfinite(values)]
            summary[region] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std()) if finite.size else math.nan,
            }
        return summary

    def _csv(self, records: Sequence[Mapping[str, Any]]) -> bytes:
        """The per-case table.

        Returns:
            the CSV file's bytes.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in records:
            values = [repr(float(r[region])) if r["mirrored"] else "" for region in REGIONS]
            writer.writerow([r["case"], r["side"], "yes" if r["mirrored"] else "no", *values])
        return buffer.getvalue().encode()

    def __call__(self, engine: Engine) -> None:
        """Gather the records, set the mean specificities in ``engine.state.metrics``, write the files and log.

        Args:
            engine: Ignite Engine at ``EPOCH_COMPLETED``; a ``save_rank`` not below the world size raises
                ``ValueError`` (``EpochReport._check_save_rank``).
        """
        world_size = self._check_save_rank()
        records = self._gathered(world_size)
        summary = self._summary(records)
        for region in REGIONS:
            engine.state.metrics[f"{self.metric_name}_{region}"] = summary[region]["mean"]
        if idist.get_rank() != self.save_rank:
            return
        n_mirrored = sum(1 for r in records if r["mirrored"])
        document = {
            "description": DESCRIPTION,
            "n_cases": len(records),
            "n_mirrored": n_mirrored,
            "axis": self.axis,
            "midplane": self.midplane,
            "std_ddof": 0,
            "specificity": summary,
            "paper_table6": PAPER_TABLE6,
        }
        csv_path, json_path = self.paths
        write_files_atomically(
            {
                csv_path: self._csv(records),
                json_path: json.dumps(json_safe(document), indent=2, allow_nan=False).encode(),
            }
        )
        means = ", ".join(f"{region} {summary[region]['mean']:.4f}" for region in REGIONS)
        paper = "/".join(f"{PAPER_TABLE6[region]:.4f}" for region in REGIONS)
        logger.info(
            f"healthy-brain test: {n_mirrored} of {len(records)} cases mirrored; mean specificity {means} "
            f"(Kayalibay et al. 2017 Table 6: {paper}); {csv_path}"
        )
