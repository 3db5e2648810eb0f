"""Class-balanced choice of sub-volume centres among sparsely annotated voxels (brain CT perfusion, II-B.2)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data.utils import set_rnd
from monai.transforms import Randomizable, apply_transform
from monai.utils import MAX_SEED

__all__ = ["ClassBalancedDataset", "sampling_candidates"]

logger = logging.getLogger(__name__)


def _as_tensor(x: Any) -> torch.Tensor:
    """A plain tensor view of ``x``.

    Returns:
        ``x`` itself for a tensor, its plain tensor for a MetaTensor (no metadata), an array as a tensor.
    """
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(x)


def sampling_candidates(
    label: Any, mask: Any | None = None, classes: Sequence[int] = (1, 2, 3, 4)
) -> dict[int, np.ndarray]:
    """Flat voxel indices of the sampling candidates of each class: annotated voxels inside the mask.

    Implements the candidate set of the brain CT perfusion paper, Section II-B.2: "All the annotated voxels within
    the cranial cavity formed the sampling candidates." Only the label's non-zero voxels are visited (one
    ``nonzero`` over the volume), so a 512x512x320 label annotated in a few 2D cross sections costs one pass and
    a few hundred thousand indices.

    Args:
        label: ``[1, *spatial]`` label, 0 = not annotated; tensor, MetaTensor or array.
        mask: optional ``[1, *spatial]`` cranial cavity mask, voxels ``> 0`` inside.
        classes: label values to collect.

    Returns:
        class -> ``int64`` array of flat (C-order) indices into ``label``'s spatial shape, ascending; a class
        without candidates maps to an empty array.

    Raises:
        ValueError: ``label`` is not ``[1, *spatial]``, or ``mask``'s shape differs from ``label``'s.
    """
    lab, msk = _as_tensor(label), None if mask is None else _as_tensor(mask)
    if lab.ndim < 2 or lab.shape[0] != 1:
        raise ValueError(f"label must be [1, *spatial], got shape {tuple(lab.shape)}.")
    if msk is not None and tuple(msk.shape) != tuple(lab.shape):
        raise ValueError(f"mask shape {tuple(msk.shape)} does not match label shape {tuple(lab.shape)}.")
    lab = lab.reshape(-1)
    flat = torch.nonzero(lab).reshape(-1)
    values = lab[flat]
    if values.is_floating_point():
        values = torch.round(values)
    values = values.long()
    if msk is not None:
        inside = msk.reshape(-1)[flat] > 0
        flat, values = flat[inside], values[inside]
    flat, values = flat.cpu().numpy(), values.cpu().numpy()
    return {int(c): flat[values == int(c)] for c in classes}


class ClassBalancedDataset(torch.utils.data.Dataset, Randomizable):
    """Sub-volume centres drawn with an equal number per tissue class, uniformly among the sampling candidates.

    Implements the sampling of the brain CT perfusion paper, Section II-B.2: "Each subvolume selected during
    training was centered on a single sampling candidate [...]. For every 400 subvolumes an equal number of
    candidates were sampled uniformly per tissue type from the set of sampling candidates." Sampling candidates are
    the annotated voxels inside the cranial cavity mask.

    Item ``i`` is of class ``classes[i % len(classes)]``, so any pass over all ``num_samples`` indices, in whatever
    order a shuffling ``DataLoader`` visits them, holds exactly ``num_samples / len(classes)`` centres per class;
    with ``num_samples = 400`` every epoch of 400 sub-volumes is balanced as in the paper. For item ``i`` a case
    holding a candidate of that class is chosen uniformly (among the cases that have one), then a candidate voxel of
    that class uniformly within the case, both with ``self.R``. The item is a shallow copy of the case dictionary
    (its volumes are not copied) plus ``"center"`` (``int64`` tensor of voxel indices, one per spatial axis) and
    ``"center_class"`` (int); ``transform`` (e.g. ``RandSubvolumeAugmentd``) is applied to it.

    The candidates of every case are found once, from the label's non-zero voxels, and cached. With
    ``precompute=True`` (default) that happens in the constructor, so a class that no case has is reported before
    training and worker processes forked by a ``DataLoader`` inherit the index instead of each rebuilding it every
    epoch. With ``precompute=False`` it happens on first use (:meth:`prepare` or the first item).

    MONAI's ``DataLoader`` seeds the data set through ``monai.data.utils.set_rnd``, which calls
    :meth:`set_random_state` on it and, because the data set is itself ``Randomizable``, stops there; this class's
    :meth:`set_random_state` therefore seeds ``transform`` too (from a draw of ``self.R``), so worker processes get
    distinct, reproducible streams for the choice of centres and for the augmentation.

    Args:
        data: the cases, a sequence of dictionaries (e.g. a list, or a ``CacheDataset`` of deterministic loading
            transforms) with ``label_key`` ``[1, *spatial]`` (0 = not annotated, 1..4 the classes), optionally
            ``mask_key`` ``[1, *spatial]`` (cranial cavity, ``> 0`` inside), and the image.
        num_samples: number of items (sub-volumes) per pass, a multiple of ``len(classes)``.
        classes: the label values to balance (paper: CSF, WM, GM, vessel = 1, 2, 3, 4).
        transform: callable applied to each item after its centre is chosen.
        label_key: key of the label.
        mask_key: key of the cranial cavity mask; a case without it counts every annotated voxel as a candidate.
            ``None`` ignores masks.
        precompute: find the candidates in the constructor (else on first use).

    Raises:
        ValueError: ``num_samples`` is not a positive multiple of ``len(classes)``, ``classes`` is empty, repeats
            a value or contains 0 (the "not annotated" value), ``data`` is empty, or (when the candidates are found)
            a class has no candidate in any case.
    """

    def __init__(
        self,
        data: Sequence[Mapping[Hashable, Any]],
        num_samples: int = 400,
        classes: Sequence[int] = (1, 2, 3, 4),
        transform: Callable | None = None,
        label_key: str = "label",
        mask_key: str | None = "mask",
        precompute: bool = True,
    ) -> None:
        classes = tuple(int(c) for c in classes)
        if not classes or len(set(classes)) != len(classes) or 0 in classes:
            raise ValueError(f"classes must be distinct non-zero label values, got {classes}.")
        if int(num_samples) <= 0 or int(num_samples) % len(classes):
            raise ValueError(
                f"num_samples must be a positive multiple of the {len(classes)} classes {classes}, got {num_samples}."
            )
        if len(data) == 0:
            raise ValueError("data must hold at least one case, got none.")
        self.data = data
        self.num_samples = int(num_samples)
        self.classes = classes
        self.transform = transform
        self.label_key = label_key
        self.mask_key = mask_key
        # per class: the indices of the cases that have candidates of it, and per case the candidates
        self._candidates: list[dict[int, np.ndarray]] | None = None
        self._spatial_shapes: list[tuple[int, ...]] | None = None
        self._cases_with: dict[int, np.ndarray] | None = None
        self._draw: tuple[int, int] | None = None
        if precompute:
            self.prepare()

    def __len__(self) -> int:
        return self.num_samples

    def _case_name(self, index: int, case: Mapping[Hashable, Any]) -> str:
        """How an error message names a case.

        Returns:
            its index, with the label's file name if the label carries one.
        """
        meta = getattr(case.get(self.label_key), "meta", None) or {}
        name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
        return f"{index} ({name})" if name else str(index)

    def prepare(self) -> ClassBalancedDataset:
        """Find and cache the sampling candidates of every case and class (once).

        Returns:
            this data set.

        Raises:
            ValueError: a case lacks ``label_key``, or a class has no candidate in any case (the error names the
                class and the cases searched).
        """
        if self._candidates is not None:
            return self
        candidates, shapes, names = [], [], []
        for i in range(len(self.data)):
            case = self.data[i]
            if self.label_key not in case:
                raise ValueError(f"case {i} has no {self.label_key!r}; keys are {sorted(map(str, case))}.")
            label = case[self.label_key]
            mask = case.get(self.mask_key) if self.mask_key is not None else None
            candidates.append(sampling_candidates(label, mask, self.classes))
            shapes.append(tuple(label.shape[1:]))
            names.append(self._case_name(i, case))
        cases_with = {c: np.array([i for i, cand in enumerate(candidates) if cand[c].size], int) for c in self.classes}
        missing = [c for c in self.classes if cases_with[c].size == 0]
        if missing:
            where = " inside the mask" if self.mask_key is not None else ""
            raise ValueError(
                f"class(es) {missing} have no sampling candidate (annotated voxel{where}) in any of the "
                f"{len(names)} cases: {', '.join(names)}."
            )
        for c in self.classes:
            if cases_with[c].size < len(candidates):
                logger.info("class %d has sampling candidates in %d of %d cases", c, cases_with[c].size, len(names))
        self._candidates, self._spatial_shapes, self._cases_with = candidates, shapes, cases_with
        return self

    def candidates(self, case_index: int) -> dict[int, np.ndarray]:
        """The sampling candidates of one case (see :func:`sampling_candidates`).

        Args:
            case_index: index into ``data``.

        Returns:
            class -> flat voxel indices.
        """
        self.prepare()
        return self._candidates[case_index]

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> ClassBalancedDataset:
        """Seed the choice of centres and, from a draw of it, the ``transform``'s random transforms.

        Args:
            seed: seed of ``self.R``.
            state: a ``np.random.RandomState`` to use instead.

        Returns:
            this data set.
        """
        super().set_random_state(seed, state)
        if self.transform is not None:
            set_rnd(self.transform, int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: int) -> None:
        """Draw a case that has candidates of class ``data``, then one of its candidates of that class.

        Args:
            data: the class value.
        """
        cases = self._cases_with[data]
        case_index = int(cases[self.R.randint(len(cases))])
        cand = self._candidates[case_index][data]
        self._draw = (case_index, int(cand[self.R.randint(len(cand))]))

    def __getitem__(self, index: int) -> Any:
        """The case with a centre of class ``classes[index % len(classes)]``, transformed.

        Args:
            index: item index in ``[0, num_samples)``.

        Returns:
            the (transformed) case dictionary with ``"center"`` and ``"center_class"``.

        Raises:
            IndexError: ``index`` is out of range.
        """
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples.")
        self.prepare()
        cls = self.classes[index % len(self.classes)]
        self.randomize(cls)
        case_index, flat = self._draw
        center = np.unravel_index(flat, self._spatial_shapes[case_index])
        item = dict(self.data[case_index])
        item["center"] = torch.tensor([int(c) for c in center], dtype=torch.long)
        item["center_class"] = cls
        return apply_transform(self.transform, item) if self.transform is not None else item
