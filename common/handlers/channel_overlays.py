"""Ignite handler drawing every channel (MRI modality) of the first evaluated cases with reference and prediction."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine
from monai.utils import convert_to_numpy

from common.data.writers import write_files_atomically
from common.handlers.report_base import EpochReport, as_items, case_label_maps, case_name, parse_class_names
from common.metrics.segmentation_report import png_bytes
from common.visualize import ChannelOverlaySlice, largest_foreground_slice, plot_channel_overlays

__all__ = ["ChannelOverlays"]

logger = logging.getLogger(__name__)


class ChannelOverlays(EpochReport):
    """Ignite handler: the channels of the first ``n_cases`` cases, with reference and prediction, in one PNG.

    The figure of Kayalibay et al. 2017, Fig. 7 ("the different modalities available for each image, together
    with ground truth labels"), with the prediction beside the ground truth as in their Figs. 14-15 and the labels
    over T1C as in their Fig. 6. Drawn by :func:`common.visualize.plot_channel_overlays`: one row per case; columns
    = every channel in grey (its own 1-99 percentile window), the reference over channel ``overlay_channel``, the
    prediction over the same channel; a legend of the label colours; radiological display.

    During the epoch it takes the first ``n_cases`` cases of ``engine.state.output`` (decollated list of dicts or
    a dict of batches): ``pred``/``label`` one-hot (argmax-ed when C > 1) or index maps with C = 1, the image
    ``[C, *spatial]`` (one channel per name) from the output dict or else the batch, the case name from the image's
    ``filename_or_obj`` (else ``case_<index>``). The plane is the one with the largest reference foreground
    (:func:`common.visualize.largest_foreground_slice`: the axial slice of a 3-D case). At ``EPOCH_COMPLETED``,
    on rank ``save_rank`` only, it writes ``<output_dir>/<prefix>modalities.png`` atomically, replacing an older
    one; an epoch without cases removes the older one (it showed another run) and logs a warning.

    Args:
        output_dir: folder of the PNG; created if missing.
        channel_names: one name per image channel in channel order, e.g. ``["T1", "T2", "T1C", "FLAIR"]``.
        class_names: label value -> name for the legend, e.g. ``{"1": "necrosis", "2": "edema", ...}``, or a list
            naming labels 1, 2, ... in order.
        overlay_channel: index of the channel drawn under the reference and prediction (2 for T1C above; negative
            counts from the last).
        n_cases: how many cases (the first ones seen) are drawn, one row each.
        prefix: prefix of the file name, e.g. ``"test_"``.
        title: figure title.
        image_key: key of the image in the output/batch dicts.
        label_key: key of the reference in ``engine.state.output``.
        pred_key: key of the prediction in ``engine.state.output``.
        save_rank: the rank that writes the file in a distributed run (it draws the cases it saw).
        label_colours: label value -> matplotlib colour replacing its fixed
            :func:`common.visualize.label_colour`, e.g. the paper's ``{1: "red", 2: "green", 3: "yellow",
            4: "orange"}``; ``None``: the fixed colours of every other report figure.

    Raises:
        TypeError: when ``class_names`` is neither a dict nor a list.
        ValueError: when ``channel_names`` is empty, ``overlay_channel`` is not one of its channels, ``n_cases`` is
            below 1, ``save_rank`` is negative, ``class_names`` names no label > 0 or ``label_colours`` names a
            label value <= 0.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        channel_names: Sequence[str],
        class_names: Mapping[str | int, str] | Sequence[str],
        overlay_channel: int = 0,
        n_cases: int = 4,
        prefix: str = "",
        title: str = "Modalities with reference and prediction",
        image_key: str = "image",
        label_key: str = "label",
        pred_key: str = "pred",
        save_rank: int = 0,
        label_colours: Mapping[str | int, Any] | None = None,
    ) -> None:
        if isinstance(channel_names, str) or len(channel_names) == 0:
            raise ValueError(f"channel_names must be a list of one name per image channel, got {channel_names!r}.")
        self.channel_names = [str(n) for n in channel_names]
        if not -len(self.channel_names) <= int(overlay_channel) < len(self.channel_names):
            raise ValueError(
                f"overlay_channel {overlay_channel} is not one of the {len(self.channel_names)} channels "
                f"{self.channel_names}."
            )
        if int(n_cases) < 1:
            raise ValueError(f"n_cases must be an integer >= 1, got {n_cases}.")
        if int(save_rank) < 0:
            raise ValueError(f"save_rank must be an integer >= 0, got {save_rank}.")
        self.label_colours = {int(v): c for v, c in (label_colours or {}).items()}
        if any(v <= 0 for v in self.label_colours):
            raise ValueError(f"label_colours are for label values > 0 (0 is transparent), got {label_colours!r}.")
        self.output_dir = str(output_dir)
        self.class_names = parse_class_names(class_names)
        self.overlay_channel = int(overlay_channel)
        self.n_cases = int(n_cases)
        self.prefix = prefix
        self.title = title
        self.image_key = image_key
        self.label_key = label_key
        self.pred_key = pred_key
        self.save_rank = int(save_rank)
        self._cases: list[ChannelOverlaySlice] = []

    @property
    def path(self) -> str:
        """The PNG written: ``<output_dir>/<prefix>modalities.png``."""
        return os.path.join(self.output_dir, f"{self.prefix}modalities.png")

    def _started(self, _engine: Engine) -> None:
        """Forget the cases of the previous epoch."""
        self._cases = []

    def iteration_completed(self, engine: Engine) -> None:
        """Take the largest-reference plane of this iteration's cases while fewer than ``n_cases`` are held.

        Args:
            engine: Ignite Engine whose ``state.output`` (and ``state.batch``) hold the current cases.
        """
        if len(self._cases) >= self.n_cases:
            return
        batch_items = as_items(engine.state.batch)
        for i, output in enumerate(as_items(engine.state.output)):
            if len(self._cases) >= self.n_cases:
                return
            batch = batch_items[i] if i < len(batch_items) else None
            name = case_name(batch, self.image_key, len(self._cases))
            self._cases.append(self._plane(name, output, batch))

    def _plane(self, name: str, output: Any, batch: Any) -> ChannelOverlaySlice:
        """The plane of one case with the largest reference foreground, in every channel.

        Returns:
            the case's :class:`common.visualize.ChannelOverlaySlice`.

        Raises:
            ValueError: when the output lacks the prediction or reference, no dict holds the image, or the image is
                not ``[len(channel_names), *spatial]`` of the reference's and prediction's spatial shape.
        """
        keys = (self.image_key, self.label_key, self.pred_key)
        image, reference, prediction = case_label_maps(output, batch, keys, name, "the modality figure needs")
        if image is None:
            raise ValueError(
                f"case '{name}': no '{self.image_key}' in the engine output or batch; the modality figure draws it."
            )
        volume = np.asarray(convert_to_numpy(image), dtype=np.float64)
        expected = (len(self.channel_names), *reference.shape)
        if volume.shape != expected or prediction.shape != reference.shape:
            raise ValueError(
                f"case '{name}': '{self.image_key}' {volume.shape} must be {expected} (one channel per name in "
                f"{self.channel_names}, the reference's spatial shape) and '{self.pred_key}' {prediction.shape} "
                f"the reference's {reference.shape}."
            )
        index = largest_foreground_slice(reference)
        plane = (slice(None), slice(None), *index)
        short_name = os.path.basename(name.rstrip("/\\")) or name
        return ChannelOverlaySlice(
            short_name, volume[(slice(None), *plane)], reference[plane], prediction[plane], index, 2
        )

    def __call__(self, engine: Engine) -> None:
        """Write the figure of the cases held (rank ``save_rank`` only).

        Args:
            engine: Ignite Engine at ``EPOCH_COMPLETED``.
        """
        self._check_save_rank()
        if idist.get_rank() != self.save_rank:
            return
        if not self._cases:
            logger.warning("no case was evaluated; %s is not written.", self.path)
            if os.path.exists(self.path):
                os.remove(self.path)
            return
        figure = plot_channel_overlays(
            self._cases,
            self.channel_names,
            self.class_names,
            overlay_channel=self.overlay_channel,
            title=self.title,
            label_colours=self.label_colours,
        )
        write_files_atomically({self.path: png_bytes(figure)})
        logger.info("modality figure of %d case(s) wrote %s", len(self._cases), self.path)
