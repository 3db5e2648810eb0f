"""One annotated 3D frame from a sparsely annotated 4D sequence, for the 3D baseline (cardiac 4D CNN paper, section 4).

The cardiac 4D CNN paper compares its 4D network with "a 3D network [...] trained only on labeled 3D frames" (section
4), using a crop of 96 x 96 x 64. In the bundle pipeline a sequence is ``[1, X, Y, Z, T]`` (time as the last spatial
axis, :class:`~common.transforms.time_axis.TimeAsSpatialAxisd`) and its label holds class indices in annotated frames
and ``ignore_value`` (255) in every voxel of the others. :class:`RandAnnotatedFramed` draws one annotated frame per
call, so the 3D baseline sees every annotated frame of the cached sequences, and only those.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

__all__ = ["RandAnnotatedFramed", "annotated_frames"]


def annotated_frames(label: torch.Tensor, ignore_value: float = 255) -> list[int]:
    """Indices of the frames of ``label`` without any ``ignore_value`` voxel.

    Args:
        label: ``[C, X, Y, Z, T]`` (any shape whose last axis is time).
        ignore_value: the value that fills the voxels of frames without annotation.

    Returns:
        the annotated frame indices ``t`` (no voxel of ``label[..., t]`` equals ``ignore_value``), ascending.
    """
    plain = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
    ignored = (plain == ignore_value).reshape(-1, plain.shape[-1]).any(dim=0)
    return [int(t) for t in torch.nonzero(~ignored).flatten().tolist()]


def _source(data: Mapping[Hashable, Any], keys: tuple[Hashable, ...]) -> str:
    """Name of the file ``data`` came from, for error messages.

    Args:
        data: the sample.
        keys: the keys to look at, in order.

    Returns:
        the first ``filename_or_obj`` found in the keys' metadata (MetaTensor ``meta`` or a ``{key}_meta_dict``
        entry), else ``"<unknown file>"``.
    """
    for key in keys:
        value = data.get(key)
        meta = value.meta if isinstance(value, MetaTensor) else data.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
            return str(meta["filename_or_obj"])
    return "<unknown file>"


class RandAnnotatedFramed(MapTransform, Randomizable):
    """Pick one annotated frame of a 4D sequence at random: ``[C, X, Y, Z, T] -> [C, X, Y, Z]`` for every key.

    Implements the training data of the 3D baseline of the cardiac 4D CNN paper, section 4: "For the 3D network, we
    use a crop of size 96x96x64 and train it only on labeled 3D frames." A frame ``t`` is annotated when no voxel of
    ``data[label_key][..., t]`` equals ``ignore_value``; one of the annotated frames is drawn uniformly with
    ``self.R`` (deterministic under ``set_random_state``) and every key becomes that frame ``x[..., t]``. A
    MetaTensor keeps its metadata: its affine is the frames' 3D one already (time is not part of it), so it stays
    valid. The frame is a contiguous copy, so the output does not hold on to the whole sequence.

    Place it in the random part of a ``Compose`` (after ``CacheDataset``'s cached deterministic transforms), before
    the 3D crop.

    Args:
        keys: keys of the ``[C, X, Y, Z, T]`` tensors to cut, e.g. ``["image", "label"]``.
        label_key: key of the label whose unannotated frames are filled with ``ignore_value`` (need not be in
            ``keys``).
        ignore_value: value of every voxel of an unannotated frame (255).
        allow_missing_keys: don't raise an exception if a key is missing.

    The output is a shallow copy of the input with the frames under ``keys`` and the chosen index under
    ``"frame_index"`` (int); other entries pass through.
    """

    frame_index_key = "frame_index"

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str = "label",
        ignore_value: float = 255,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.ignore_value = ignore_value
        self.frame_index = 0

    def randomize(self, data: list[int]) -> None:
        """Draw one of the annotated frames uniformly.

        Args:
            data: the annotated frame indices (not empty).
        """
        self.frame_index = int(data[self.R.randint(len(data))])

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, Any]:
        """Cut every key to one randomly drawn annotated frame.

        Args:
            data: ``[C, X, Y, Z, T]`` tensors under the keys and ``label_key``, all with the same ``T``.

        Returns:
            a shallow copy of ``data`` with ``[C, X, Y, Z]`` frames under the keys and the frame's index under
            ``"frame_index"``.

        Raises:
            KeyError: when ``label_key`` is missing.
            ValueError: when a tensor is not 5-D or its number of frames differs from the label's, or when no frame
                is annotated (the message names the file).
        """
        d = dict(data)
        names = (self.label_key, *self.keys)
        if self.label_key not in d:
            raise KeyError(f"RandAnnotatedFramed: label key {self.label_key!r} is missing ({_source(d, names)}).")
        label = d[self.label_key]
        if label.ndim != 5:
            raise ValueError(
                f"{self.label_key}: expected [C, X, Y, Z, T], got shape {tuple(label.shape)} ({_source(d, names)})."
            )
        frames = annotated_frames(label, self.ignore_value)
        if not frames:
            raise ValueError(
                f"{_source(d, names)}: no annotated frame in {self.label_key!r} (every one of its "
                f"{label.shape[-1]} frames has voxels equal to ignore_value={self.ignore_value})."
            )
        keys = list(self.key_iterator(d))
        for key in keys:
            if d[key].ndim != 5 or d[key].shape[-1] != label.shape[-1]:
                raise ValueError(
                    f"{key}: expected [C, X, Y, Z, T] with T={label.shape[-1]} as in {self.label_key!r}, got shape "
                    f"{tuple(d[key].shape)} ({_source(d, names)})."
                )
        self.randomize(frames)
        for key in keys:
            d[key] = d[key][..., self.frame_index].contiguous()
        d[self.frame_index_key] = self.frame_index
        return d
