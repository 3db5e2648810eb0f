"""What the report handlers share: engine items, label maps, class names and the attach pattern.

Per-case items of an engine's batch and output, channel-first label maps as index maps, class names, and the attach
pattern (reset at epoch start, collect per iteration, write at epoch end).

Used by :class:`common.handlers.segmentation_report.SegmentationReport` (every bundle's evaluation report),
:class:`common.handlers.temporal_report.TemporalSegmentationReport` (3D + time) and the other report handlers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
from ignite.engine import Engine, Events
from monai.data import decollate_batch
from monai.utils import ImageMetaKey, convert_to_numpy

__all__ = [
    "EpochReport",
    "as_items",
    "case_label_maps",
    "case_name",
    "index_map",
    "meta_name",
    "parse_class_names",
]


def as_items(data: Any) -> list[Any]:
    """Engine batch/output as a list of per-case items.

    Returns:
        a decollated list as is, a dict of batches decollated, anything else as no items.
    """
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        return decollate_batch(data, detach=True)
    return []


def index_map(x: Any, key: str, name: str) -> np.ndarray:
    """Integer label map of a channel-first one-hot/probability map (argmax over C) or index map (C = 1).

    Returns:
        the ``spatial`` int64 map of a ``[C, *spatial]`` array.

    Raises:
        ValueError: when the array is not 3-D, 4-D or 5-D (channel first).
    """
    array = convert_to_numpy(x)
    if array.ndim not in (3, 4, 5):
        raise ValueError(
            f"case '{name}': '{key}' must be channel-first [C, H, W], [C, H, W, D] or [C, H, W, D, T] "
            f"(one-hot or index map), got shape {tuple(array.shape)}."
        )
    return (np.argmax(array, axis=0) if array.shape[0] > 1 else np.rint(array[0])).astype(np.int64)


def meta_name(metas: Sequence[Mapping | None], index: int) -> str:
    """Name of one case: ``filename_or_obj`` of the first of ``metas`` that has one.

    The one place every report names its cases (a one-item list, as a collated batch of one holds it, is unwrapped).

    Args:
        metas: meta dicts to look in, in order (``None`` or empty ones are skipped).
        index: the case's position in the epoch, for a case without a name.

    Returns:
        the name, else ``case_<index>`` (4 digits).
    """
    for meta in metas:
        name = (meta or {}).get(ImageMetaKey.FILENAME_OR_OBJ)
        if isinstance(name, (list, tuple)) and len(name) == 1:
            name = name[0]
        if name is not None and str(name) != "":
            return str(name)
    return f"case_{index:04d}"


def case_name(item: Any, image_key: str, index: int) -> str:
    """Name of one case of an engine's batch (:func:`meta_name` of its image).

    Args:
        item: the case's batch item (a dict; anything else has no name).
        image_key: key of the image whose meta data name the case.
        index: the case's position in the epoch, for a case without a name.

    Returns:
        ``filename_or_obj`` of the item's image (MetaTensor meta, then ``<image_key>_meta_dict``), else
        ``case_<index>`` (4 digits).
    """
    if not isinstance(item, Mapping):
        return meta_name([], index)
    return meta_name([getattr(item.get(image_key), "meta", None), item.get(f"{image_key}_meta_dict")], index)


def case_label_maps(
    output: Any,
    batch: Any,
    keys: tuple[str, str, str],
    name: str,
    needed_by: str,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The image, reference and prediction of one case of an engine's output, for a figure of it.

    Args:
        output: the case's ``engine.state.output`` item, a dict holding the reference and the prediction
            (channel-first one-hot/probability maps or index maps, see :func:`index_map`).
        batch: the case's ``engine.state.batch`` item (or ``None``), where the image is looked up when the output
            lacks it.
        keys: ``(image_key, label_key, pred_key)``.
        name: the case name, for error messages.
        needed_by: what needs them, for the error message, e.g. ``"overlays need"``.

    Returns:
        the image as found (``None`` when neither dict holds it), the reference and the prediction as integer
        label maps ``[*spatial]``.

    Raises:
        ValueError: when the output is not a dict holding the reference and the prediction, or a map is not
            channel-first 2-D, 3-D or 3-D + time.
    """
    image_key, label_key, pred_key = keys
    if not isinstance(output, Mapping) or label_key not in output or pred_key not in output:
        found = sorted(output) if isinstance(output, Mapping) else type(output).__name__
        raise ValueError(
            f"case '{name}': engine output holds {found}; {needed_by} dicts with '{pred_key}' and '{label_key}'."
        )
    image = output.get(image_key)
    if image is None and isinstance(batch, Mapping):
        image = batch.get(image_key)
    return image, index_map(output[label_key], label_key, name), index_map(output[pred_key], pred_key, name)


def parse_class_names(class_names: Mapping[str | int, str] | Sequence[str]) -> dict[int, str]:
    """Label value -> name, sorted by value; a list names labels 1, 2, ... in order.

    Returns:
        the parsed names.

    Raises:
        TypeError: when ``class_names`` is neither a dict nor a list.
        ValueError: on a non-integer, negative or repeated label value, an empty name, or no label > 0.
    """
    if isinstance(class_names, str) or not isinstance(class_names, (Mapping, Sequence)):
        raise TypeError(f"class_names must be a dict label value -> name or a list of names, got {class_names!r}.")
    items = class_names.items() if isinstance(class_names, Mapping) else enumerate(class_names, start=1)
    parsed: dict[int, str] = {}
    for value, name in items:
        try:
            label = int(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"class_names keys must be integer label values like '1', got {value!r}.") from err
        if label < 0 or label in parsed or not str(name):
            raise ValueError(
                f"class_names entry {value!r}: {name!r}: label values must be unique and >= 0, names non-empty."
            )
        parsed[label] = str(name)
    if not any(v > 0 for v in parsed):
        raise ValueError(f"class_names must name at least one label value > 0, got {class_names!r}.")
    return dict(sorted(parsed.items()))


class EpochReport:
    """Base of the report handlers: one way to attach them to an evaluator.

    :meth:`attach` registers ``_started`` (EPOCH_STARTED), ``iteration_completed`` (ITERATION_COMPLETED) and the
    handler itself (EPOCH_COMPLETED), once each.

    Subclasses implement ``_started(engine)`` (clear what the previous epoch collected), ``iteration_completed``
    (collect the current cases) and ``__call__(engine)`` (write the report).
    """

    save_rank: int = 0

    def _started(self, engine: Engine) -> None:
        raise NotImplementedError

    def _check_save_rank(self) -> int:
        """Check that the writing rank exists.

        Returns:
            the world size.

        Raises:
            ValueError: when ``save_rank`` is not below the world size.
        """
        world_size = idist.get_world_size()
        if self.save_rank >= world_size:
            raise ValueError(f"save_rank={self.save_rank} must be below the world size {world_size}.")
        return world_size

    def iteration_completed(self, engine: Engine) -> None:
        """Collect what this iteration's cases hold (subclasses implement it).

        Args:
            engine: Ignite Engine whose ``state.batch`` / ``state.output`` hold the current cases.

        Raises:
            NotImplementedError: always, here.
        """
        raise NotImplementedError

    def __call__(self, engine: Engine) -> None:
        """Write the report (subclasses implement it).

        Args:
            engine: the Ignite Engine at ``EPOCH_COMPLETED``.

        Raises:
            NotImplementedError: always, here.
        """
        raise NotImplementedError

    def attach(self, engine: Engine) -> None:
        """Register the handler on ``engine`` (an evaluator): reset at epoch start, collect per iteration, report.

        Args:
            engine: Ignite Engine, typically a MONAI ``SupervisedEvaluator`` with the metrics already attached.
        """
        if not engine.has_event_handler(self._started, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)
