"""3D U-Net of Çiçek et al. as used for abdominal multi-organ CT segmentation (Roth et al.)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Pool

__all__ = ["UNet3D"]


class _TwoConv(torch.nn.Sequential):
    """Two same-size 3x3x3 convolutions, each followed by norm and activation (one U-Net resolution level)."""

    def __init__(self, spatial_dims, in_channels, mid_channels, out_channels, norm, act, dropout, bias):
        super().__init__()
        for name, (c_in, c_out) in (("conv_0", (in_channels, mid_channels)), ("conv_1", (mid_channels, out_channels))):
            self.add_module(
                name,
                Convolution(
                    spatial_dims, c_in, c_out, kernel_size=3, padding=1, norm=norm, act=act, dropout=dropout, bias=bias
                ),
            )


class UNet3D(torch.nn.Module):
    """3D U-Net with Çiçek-style channel doubling, same-size (zero-padded) convolutions and concatenation skips.

    Implements the "3D U-Net like fully convolutional network" of Roth et al., *Deep learning and its application
    to medical image segmentation* (2018), Section II.A and Fig. 3, which follows Çiçek et al. (MICCAI 2016):

    - four resolution levels; each analysis level has two 3x3x3 convolutions, each followed by batch norm and ReLU,
      the first producing ``features[k]`` channels and the second doubling them (32->64, 64->128, 128->256,
      256->512 by default), then a 2x2x2 max pooling with stride 2;
    - each synthesis level up-samples with a 2x2x2 transposed convolution of stride 2 (channels kept), concatenates
      the analysis features of equal resolution, and applies two 3x3x3 convolutions with batch norm and ReLU;
    - a final 1x1x1 convolution to ``out_channels`` logits. The voxel-wise softmax of the paper is applied by the
      loss (``DiceLoss(softmax=True)``) and by post-processing, so the network returns logits.

    Unlike Çiçek's *valid* convolutions, the paper uses zero padding ("same size convolutions") so input and output
    have the same size. Each spatial size must be divisible by ``2 ** (len(features) - 1)`` (8 by default).

    With the defaults (1 input channel, 8 outputs) the network has 19,074,120 trainable parameters (the paper's
    "~19M").

    Args:
        spatial_dims: number of spatial dimensions (3 for the paper; 2 works too).
        in_channels: number of input channels.
        out_channels: number of output classes (background included).
        features: channels of the first convolution at each resolution level, from the top; the second
            convolution of a level doubles them. Its length is the number of resolution levels.
        norm: feature normalization, a MONAI ``Norm`` factory name or ``(name, args)``.
        act: activation, a MONAI ``Act`` factory name or ``(name, args)``.
        dropout: dropout probability after each convolution (the paper uses none).
        bias: whether the convolutions have a bias term.

    Input ``[B, in_channels, *spatial]`` -> output ``[B, out_channels, *spatial]`` logits.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 8,
        features: Sequence[int] = (32, 64, 128, 256),
        norm: str | tuple = "batch",
        act: str | tuple = "relu",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if len(features) < 2 or any(int(f) < 1 for f in features):
            raise ValueError(f"features must list at least 2 positive channel counts, got {features}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        self.spatial_dims = spatial_dims
        self.divisor = 2 ** (len(features) - 1)

        def level(c_in: int, c_mid: int, c_out: int) -> _TwoConv:
            return _TwoConv(spatial_dims, c_in, c_mid, c_out, norm, act, dropout, bias)

        self.down = torch.nn.ModuleList()
        c_in = in_channels
        for f in features:
            self.down.append(level(c_in, f, 2 * f))
            c_in = 2 * f
        self.pool = Pool["max", spatial_dims](kernel_size=2, stride=2)

        self.upsample = torch.nn.ModuleList()
        self.up = torch.nn.ModuleList()
        for f in reversed(features[:-1]):
            self.upsample.append(
                UpSample(spatial_dims, c_in, c_in, scale_factor=2, kernel_size=2, mode="deconv", bias=bias)
            )
            self.up.append(level(c_in + 2 * f, 2 * f, 2 * f))
            c_in = 2 * f
        self.head = Convolution(spatial_dims, c_in, out_channels, kernel_size=1, conv_only=True, bias=True)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Analysis path: two convolutions per level, max pooling between levels.

        Args:
            x: input ``[B, in_channels, *spatial]``.

        Returns:
            the features of every level, the deepest last.
        """
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        return skips

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Synthesis path: up-sample, concatenate the equal-resolution skip, convolve; then the 1x1x1 head.

        Args:
            skips: the output of :py:meth:`encode`.

        Returns:
            logits ``[B, out_channels, *spatial]``.
        """
        x = skips[-1]
        n = len(skips)
        for i, (upsample, block) in enumerate(zip(self.upsample, self.up, strict=True)):
            x = block(torch.cat([upsample(x), skips[n - 2 - i]], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``[B, in_channels, *spatial]``, each spatial size divisible by :py:attr:`divisor`.

        Returns:
            logits ``[B, out_channels, *spatial]`` (softmax is applied by the loss and the post-processing).
        """
        return self.decode(self.encode(x))
