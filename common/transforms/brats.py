"""BraTS tumour regions as channels (Kayalıbay et al. 2017, section 4.2, Tables 3-6; Menze et al. 2015).

MONAI's ``ConvertToMultiChannelBasedOnBratsClassesd`` builds the regions from the BraTS 2017-2021 numbering (no
label 3) and would leave the 2015 non-enhancing tumour out of "whole" and "core"; :class:`BratsRegionsd` builds them
from the 2015 numbering the paper uses (:func:`common.metrics.brats_regions.region_masks`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from common.metrics.brats_regions import region_masks

__all__ = ["BratsRegionsd"]


class BratsRegionsd(MapTransform):
    """Label maps or one-hot class channels (BraTS 2015 numbering) to the three region channels whole, core, enhancing.

    Args:
        keys: the items to convert: ``[1, *spatial]`` label maps or ``[5, *spatial]`` one-hot channels (argmax-ed).
        names: where to write each result (default: in place), one per key.
        allow_missing_keys: skip absent keys.

    Raises:
        ValueError: ``names`` of another length than ``keys``.
    """

    def __init__(self, keys: KeysCollection, names: Sequence[str] | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.names = list(self.keys) if names is None else list(names)
        if len(self.names) != len(self.keys):
            raise ValueError(f"names must give one name per key: {len(self.keys)} keys, {len(self.names)} names.")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        """Add the ``[3, *spatial]`` float region channels (``REGIONS`` order) under ``names``.

        Args:
            data: the item dict.

        Returns:
            the dict with the region channels.
        """
        d = dict(data)
        for key, name in self.key_iterator(d, self.names):
            value = torch.as_tensor(d[key])
            label = value.argmax(0) if value.shape[0] > 1 else value[0]
            regions = torch.as_tensor(region_masks(label.detach().cpu().numpy()), dtype=torch.float32)
            regions = regions.to(value.device)
            d[name] = MetaTensor(regions, meta=dict(d[key].meta)) if isinstance(d[key], MetaTensor) else regions
        return d
