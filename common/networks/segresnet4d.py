"""The cardiac 4D CNN: SegResNet's main encoder-decoder branch with 4D convolutions (and its 3D baseline).

Implements the network of the cardiac CCTA 4D CNN paper (Myronenko et al., section 3 and Table 1): "the network
architecture follows the one proposed in [7] (SegResNet, Myronenko 2018), where only the main decoder branch is used
and modified to fit 4D images within GPU memory limits". For ``spatial_dims=4`` (input ``[B, 1, X, Y, Z, T]``):

============== ================================================ ==========================
name           ops                                              output (paper's crop)
============== ================================================ ==========================
InitConv       Conv 3x3x3x3                                     8 x 96 x 96 x 64 x 16
EncoderBlock0  GN, ReLU, Conv, GN, ReLU, Conv, add identity     8 x 96 x 96 x 64 x 16
EncoderDown1   Conv 3x3x3x3 stride 2                            16 x 48 x 48 x 32 x 8
EncoderBlock1  (block) x 2                                      16 x 48 x 48 x 32 x 8
EncoderDown2   Conv 3x3x3x3 stride 2                            32 x 24 x 24 x 16 x 4
EncoderBlock2  (block) x 4                                      32 x 24 x 24 x 16 x 4
DecoderUp1     Conv 1x1x1x1, 4D nearest up-sampling, + EncoderBlock1   16 x 48 x 48 x 32 x 8
DecoderBlock1  (block)                                          16 x 48 x 48 x 32 x 8
DecoderUp0     Conv 1x1x1x1, 4D nearest up-sampling, + EncoderBlock0   8 x 96 x 96 x 64 x 16
DecoderBlock0  (block)                                          8 x 96 x 96 x 64 x 16
DecoderEnd     Conv 1x1x1x1 (softmax outside the network)       3 x 96 x 96 x 64 x 16
============== ================================================ ==========================

The blocks are MONAI's ``ResBlock`` and ``get_conv_layer`` (SegResNet's own pieces: bias-free convolutions, group
normalization with 8 groups as in [7]), built with ``spatial_dims=4`` through the 4D entries that
:py:func:`common.networks.conv4d.register_monai_4d` adds to MONAI's layer factories; the up-sampling is
:py:class:`common.networks.conv4d.UpSample4d`. Two departures from MONAI's ``SegResNet`` (which also refuses
``spatial_dims=4``), both to follow Table 1: the end is a single 1x1x1x1 convolution with a bias (MONAI puts a
group norm and a ReLU before it), and up-sampling is nearest-neighbour (MONAI's default is linear). Inside, the 4D
network keeps its activations time-major (:py:func:`common.networks.conv4d.to_time_major`: Conv4d, GroupNorm4d,
ReLU, the additions and UpSample4d all keep that layout), which saves every Conv4d two transposes.

``spatial_dims=3`` builds the paper's 3D baseline (section 4) from the same code: "largely following the same
architecture ... except that all convolutions are 3D and include a greater number of layers with one additional
down-sampling level (the end of the encoder being of size 12x12x8)"; the paper gives no more, so the bundle's 3D
variant uses SegResNet's own depths ``blocks_down=(1, 2, 2, 4)``, ``blocks_up=(1, 1, 1)`` (the cited work [7]).

``checkpoint=True`` recomputes each block's activations in the backward pass (``torch.utils.checkpoint``, not
re-entrant) instead of keeping them: the memory switch of the cardiac bundle (issue 10, ``BENCHMARKS.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.segresnet_block import ResBlock, get_conv_layer
from torch.utils.checkpoint import checkpoint as checkpoint_fn

from common.networks.conv4d import UpSample4d, register_monai_4d, set_time_padding_mode, to_time_major

__all__ = ["SegResNet4D"]


class _ResBlock(ResBlock):
    """MONAI's ``ResBlock`` (GN, ReLU, Conv, GN, ReLU, Conv, add identity) with optional activation checkpointing.

    Same parameters and state dict as ``ResBlock``; its forward is ``ResBlock``'s (repeated here: TorchScript has no
    ``super()``), run under ``torch.utils.checkpoint`` when ``use_checkpoint`` is set and gradients are on.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.use_checkpoint = False

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = self.conv1(self.act(self.norm1(x)))
        x = self.conv2(self.act(self.norm2(x)))
        x += identity
        return x

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint_fn(self._residual, x, use_reentrant=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: ``[B, C, *spatial]``.

        Returns:
            ``x`` plus the block's residual.
        """
        if not torch.jit.is_scripting() and self.use_checkpoint and torch.is_grad_enabled():
            return self._checkpointed(x)
        return self._residual(x)


class SegResNet4D(torch.nn.Module):
    """SegResNet's encoder and main decoder in 4D (cardiac 4D CNN paper, section 3 and Table 1), or in 3D.

    Args:
        spatial_dims: 4 for ``[B, C, X, Y, Z, T]`` (the paper's network), 3 for ``[B, C, X, Y, Z]`` (its 3D
            baseline).
        in_channels: input channels (1: one CT sequence).
        out_channels: classes (3: background, LV cavity, LV myocardium); the output is logits.
        init_filters: channels after the first convolution (8), doubled at each down-sampling.
        blocks_down: residual blocks per encoder level; ``(1, 2, 4)`` is Table 1.
        blocks_up: residual blocks per decoder level, deepest first; ``(1, 1)`` is Table 1. One fewer than
            ``blocks_down``.
        norm: MONAI normalization name and arguments (group normalization with 8 groups, as [7]).
        time_padding_mode: padding of the time axis in every 4D convolution: ``"zeros"`` (the paper's),
            ``"reflect"``, ``"replicate"`` or ``"circular"``; ignored in 3D.
        checkpoint: recompute each residual block in the backward pass instead of storing its activations.

    Raises:
        ValueError: for ``spatial_dims`` other than 3 or 4, or ``blocks_up`` not one shorter than ``blocks_down``.
    """

    def __init__(
        self,
        spatial_dims: int = 4,
        in_channels: int = 1,
        out_channels: int = 3,
        init_filters: int = 8,
        blocks_down: Sequence[int] = (1, 2, 4),
        blocks_up: Sequence[int] = (1, 1),
        norm: tuple | str = ("GROUP", {"num_groups": 8}),
        time_padding_mode: str = "zeros",
        checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (3, 4):
            raise ValueError(f"SegResNet4D: spatial_dims must be 3 or 4; got {spatial_dims!r}.")
        if len(blocks_up) != len(blocks_down) - 1:
            raise ValueError(
                f"SegResNet4D: blocks_up needs one entry per up-sampling, len(blocks_down) - 1 = "
                f"{len(blocks_down) - 1}; got blocks_down={tuple(blocks_down)}, blocks_up={tuple(blocks_up)}."
            )
        if spatial_dims == 4:
            register_monai_4d()
        self.spatial_dims = spatial_dims
        self.levels = len(blocks_down)
        self.checkpoint = False
        act = ("RELU", {"inplace": True})
        self.conv_init = get_conv_layer(spatial_dims, in_channels, init_filters)
        self.down_samples, self.down_layers = torch.nn.ModuleList(), torch.nn.ModuleList()
        for i, n_blocks in enumerate(blocks_down):
            channels = init_filters * 2**i
            pre = get_conv_layer(spatial_dims, channels // 2, channels, stride=2) if i else torch.nn.Identity()
            self.down_samples.append(pre)
            self.down_layers.append(
                torch.nn.Sequential(*[_ResBlock(spatial_dims, channels, norm=norm, act=act) for _ in range(n_blocks)])
            )
        self.up_samples, self.up_layers = torch.nn.ModuleList(), torch.nn.ModuleList()
        for i, n_blocks in enumerate(blocks_up):
            channels = init_filters * 2 ** (len(blocks_up) - i)
            upsample = UpSample4d(2) if spatial_dims == 4 else torch.nn.Upsample(scale_factor=2, mode="nearest")
            self.up_samples.append(
                torch.nn.Sequential(get_conv_layer(spatial_dims, channels, channels // 2, kernel_size=1), upsample)
            )
            self.up_layers.append(
                torch.nn.Sequential(
                    *[_ResBlock(spatial_dims, channels // 2, norm=norm, act=act) for _ in range(n_blocks)]
                )
            )
        self.conv_final = get_conv_layer(spatial_dims, init_filters, out_channels, kernel_size=1, bias=True)
        if spatial_dims == 4:
            set_time_padding_mode(self, time_padding_mode)
        self.set_checkpointing(checkpoint)

    def set_checkpointing(self, enabled: bool) -> None:
        """Turn activation checkpointing of every residual block on or off.

        Args:
            enabled: recompute each block's activations in the backward pass instead of storing them.
        """
        self.checkpoint = bool(enabled)
        for module in self.modules():
            if isinstance(module, _ResBlock):
                module.use_checkpoint = self.checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` (TorchScript-compatible; ``torch.jit.script`` exports it for the Model Zoo).

        Args:
            x: ``[B, in_channels, X, Y, Z, T]`` (4D) or ``[B, in_channels, X, Y, Z]`` (3D); every spatial size
                divisible by ``2 ** (len(blocks_down) - 1)`` (4 for Table 1: the additive skips need the
                down-sampled sizes to double back exactly).

        Returns:
            logits ``[B, out_channels, ...]`` with the input's spatial size, contiguous.

        Raises:
            ValueError: for an input of the wrong rank or channels, or a size not divisible as above.
        """
        factor = 2 ** (self.levels - 1)
        in_channels = self.conv_init.conv.in_channels
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != in_channels:
            axes = "X, Y, Z, T" if self.spatial_dims == 4 else "X, Y, Z"
            raise ValueError(f"SegResNet4D expects [B, {in_channels}, {axes}]; got shape {x.shape}.")
        for n in x.shape[2:]:
            if n % factor:
                raise ValueError(
                    f"SegResNet4D: every spatial size must be divisible by {factor} (one factor 2 per "
                    f"down-sampling); got shape {x.shape}."
                )
        if self.spatial_dims == 4:
            x = to_time_major(x)
        x = self.conv_init(x)
        skips: list[torch.Tensor] = []
        for down, blocks in zip(self.down_samples, self.down_layers):  # noqa: B905 (TorchScript has no strict)
            x = blocks(down(x))
            skips.append(x)
        skips.pop()  # the deepest level's output is x itself
        for upsample, blocks in zip(self.up_samples, self.up_layers):  # noqa: B905
            x = blocks(upsample(x) + skips.pop())
        return self.conv_final(x).contiguous()
