"""Valid-convolution 3D U-Net with short summation shortcuts for 4D CT (van de Leemput et al. 2019, section II-A)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from monai.networks.blocks import Convolution, UpSample
from monai.networks.layers.factories import Pool

__all__ = ["ValidConvUNet", "center_crop_to", "cyclic_channel_sum"]

#: the paper's activation, f(x) = x for x >= 0 and x / 3 otherwise (Eq. 1), as a MONAI ``Act`` factory entry
VERY_LEAKY_RELU = ("leakyrelu", {"negative_slope": 1.0 / 3.0})
_ACTS = {"very_leaky_relu": VERY_LEAKY_RELU, "relu": ("relu", {})}
_INITS = ("he_very_leaky", "xavier")


def center_crop_to(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Crop the spatial dimensions of ``x`` around their centre to ``size`` (section II-A, merge layers).

    Where a dimension shrinks by an odd number of voxels the extra voxel is taken from the high end; inside
    :py:class:`ValidConvUNet` all differences are even. TorchScript-compatible.

    Args:
        x: tensor ``[B, C, *spatial]``.
        size: target spatial size, one entry per spatial dimension, each at most the current size.

    Returns:
        a view of ``x`` of shape ``[B, C, *size]``.

    Raises:
        ValueError: when ``size`` has the wrong length or exceeds the size of ``x``.
    """
    spatial = x.shape[2:]
    if len(size) != len(spatial):
        raise ValueError(f"cannot centre-crop spatial size {spatial} to {size}.")
    for d in range(len(size)):
        s, t = spatial[d], int(size[d])
        if t > s or t < 0:
            raise ValueError(f"cannot centre-crop spatial size {spatial} to {size}.")
        x = x.narrow(d + 2, (s - t) // 2, t)
    return x


def cyclic_channel_sum(shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Element-wise sum of a shortcut set ``A`` onto a feature set ``B`` with the paper's channel rule (section II-A).

    Both sets are first centre-cropped to their smaller spatial size. When the channel counts differ, the channels
    of ``A`` are iterated cyclically until they match ``B`` (or cut when ``A`` is larger): ``A = (a, b, c)`` onto
    ``B = (f1, ..., f64)`` gives ``(f1 + a, f2 + b, f3 + c, f4 + a, ..., f64 + a)``, and ``A`` of 64 maps onto ``B``
    of 3 gives ``(f1 + a1, f2 + a2, f3 + a3)``. The result has the channels of ``B``.

    Args:
        shortcut: the shortcut set ``A``, ``[batch, C_a, *spatial_a]`` (start of the curved arrows in Figure 1).
        x: the feature set ``B``, ``[batch, C_b, *spatial_b]``.

    Returns:
        ``[batch, C_b, *min(spatial_a, spatial_b)]``: ``B[:, j] + A[:, j mod C_a]`` after cropping.

    Raises:
        ValueError: when the batch sizes or the numbers of spatial dimensions differ.
    """
    if shortcut.ndim != x.ndim or shortcut.ndim < 3 or shortcut.shape[0] != x.shape[0]:
        raise ValueError(
            f"shortcut {shortcut.shape} and features {x.shape} need the same batch size and number of spatial "
            "dimensions."
        )
    size = [min(shortcut.shape[d], x.shape[d]) for d in range(2, x.ndim)]
    a, b = center_crop_to(shortcut, size), center_crop_to(x, size)
    if a.shape[1] != b.shape[1]:
        index = torch.arange(b.shape[1], device=a.device) % a.shape[1]
        a = a.index_select(1, index)
    return b + a


class _ValidConvPair(torch.nn.Module):
    """Two valid 3x3x3 convolutions (conv -> norm -> activation each) with an optional summation shortcut.

    ``dropout > 0`` puts element-wise dropout before each of the two convolutions (used at the coarsest level). The
    shortcut takes the pair's input (before dropout), centre-cropped by 2 voxels per side, and adds it with
    :py:func:`cyclic_channel_sum` after the second convolution's activation.
    """

    def __init__(
        self, in_channels: int, out_channels: int, norm: str | tuple | None, act: tuple, dropout: float, shortcut: bool
    ) -> None:
        super().__init__()
        kwargs = {"kernel_size": 3, "padding": 0, "norm": norm, "act": act, "bias": norm is None}
        self.conv_0 = Convolution(3, in_channels, out_channels, **kwargs)
        self.conv_1 = Convolution(3, out_channels, out_channels, **kwargs)
        self.dropout = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_1(self.dropout(self.conv_0(self.dropout(x))))
        return cyclic_channel_sum(x, y) if self.shortcut else y


class ValidConvUNet(torch.nn.Module):
    """Valid-convolution 3D U-Net with summation shortcuts over every pair of 3x3x3 convolutions.

    Implements the model of van de Leemput et al., *Multiclass brain tissue segmentation in 4D CT using
    convolutional neural networks* (IEEE Access 2019), section II-A and Figure 1 (15 convolution, 3 max-pool and
    3 up-scaling layers), with the dropout of section II-B1 and the initialisation of section II-B4:

    - four resolution levels; levels 1-3 of the analysis path: two *valid* (unpadded) 3x3x3 convolutions, then a
      2x2x2 max pooling; level 4: dropout (50 %, element-wise) before each of its two 3x3x3 convolutions;
    - synthesis levels 3, 2, 1: nearest-neighbour up-scaling by 2 (not deconvolution, to avoid checkerboard
      artefacts), concatenation ``[up-scaled, encoder]`` with the encoder features of that level centre-cropped to
      the up-scaled size (long shortcut), two 3x3x3 convolutions; then a 1x1x1 convolution to ``out_channels``:
      8 + 6 + 1 = 15 convolutions. Each 3x3x3 convolution is followed by batch normalisation and the *very leaky
      ReLU* ``f(x) = x if x >= 0 else x / 3`` (Eq. 1; ``act="relu"`` for the 3D U-Net baseline and the ablation);
    - ``short_shortcuts``: the input of every pair of 3x3x3 convolutions, centre-cropped by 2 voxels per side, is
      added to the pair's output; channel counts are matched by the paper's cyclic rule (:py:func:`cyclic_channel_sum`).
      The sum is taken *after* the second convolution's activation, as a separate merge layer: the paper follows
      each convolution by its activation and draws the summation as its own layer (Figure 1; Lasagne's
      ``batch_norm`` stacks conv -> BN -> nonlinearity before any merge layer), and it keeps the shortcut an
      identity path, which He et al. ("Identity mappings in deep residual networks", 2016) found to train best;
    - the paper's final softmax layer is *not* part of the module: it returns logits, and the softmax is applied by
      the loss and the post-processing (MONAI convention);
    - the 3x3x3 convolutions have no bias (batch normalisation's shift replaces it, as in Lasagne's ``batch_norm``);
      the 1x1x1 convolution has one.

    Sizes: each spatial dimension of the input must be ``n = 92 + 8k`` (``k >= 0``); the output is ``n - 88``
    (the receptive field) in every dimension, e.g. 124 -> 36 in training. The dimensions may differ.

    Default ``features=(32, 64, 128, 256)``: the paper gives no channel counts; these are the first-convolution
    counts of each level of Çiçek et al.'s 3D U-Net (32/64, 64/128, 128/256, 256/512), which the paper could "only
    slightly" change within 12 GB at 124^3 and batch 2; one count per level keeps each summation shortcut a plain
    identity inside a level. With 19 inputs and 4 outputs this gives 5,853,092 trainable parameters.

    Args:
        spatial_dims: number of spatial dimensions; only 3 is supported.
        in_channels: input channels (the 19 CT time points).
        out_channels: output classes (4: CSF, WM, GM, vessel).
        features: four channel counts, one per resolution level from the top (both convolutions of a level).
        norm: feature normalisation after each 3x3x3 convolution, a MONAI ``Norm`` name or ``(name, args)``;
            ``None`` disables it (the convolutions then get a bias).
        act: ``"very_leaky_relu"`` (the paper) or ``"relu"`` (3D U-Net baseline, ablation).
        dropout: element-wise dropout probability before the 3x3x3 convolutions at the coarsest level (0.5).
        short_shortcuts: add the summation shortcuts over every pair of 3x3x3 convolutions.
        init: ``"he_very_leaky"`` (normal with std ``sqrt(9 / (5 fan_in))``, Eq. 4) or ``"xavier"`` (Glorot uniform,
            the 3D U-Net baseline); convolution biases are zero, normalisation weights one and shifts zero.

    Input ``[B, in_channels, n1, n2, n3]`` -> logits ``[B, out_channels, n1 - 88, n2 - 88, n3 - 88]``.

    Raises:
        ValueError: for an unsupported ``spatial_dims``, ``act`` or ``init``, a bad ``features``, channel count or
            ``dropout``.
    """

    #: input size minus output size in every spatial dimension (the receptive field)
    size_difference: ClassVar[int] = 88
    #: distance between consecutive valid input sizes (2 ** number of poolings)
    size_step: ClassVar[int] = 8
    #: smallest valid input size (output 4)
    min_input_size: ClassVar[int] = 92

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 19,
        out_channels: int = 4,
        features: Sequence[int] = (32, 64, 128, 256),
        norm: str | tuple | None = "batch",
        act: str = "very_leaky_relu",
        dropout: float = 0.5,
        short_shortcuts: bool = True,
        init: str = "he_very_leaky",
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"spatial_dims must be 3 (the network is volumetric), got {spatial_dims}.")
        if len(features) != 4 or any(int(f) < 1 for f in features):
            raise ValueError(f"features must list 4 positive channel counts (one per level), got {features}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        if act not in _ACTS:
            raise ValueError(f"act must be one of {sorted(_ACTS)}, got {act!r}.")
        if init not in _INITS:
            raise ValueError(f"init must be one of {list(_INITS)}, got {init!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        f = [int(c) for c in features]
        self.in_channels, self.out_channels, self.features = in_channels, out_channels, tuple(f)

        def pair(c_in: int, c_out: int, p: float = 0.0) -> _ValidConvPair:
            return _ValidConvPair(c_in, c_out, norm, _ACTS[act], p, short_shortcuts)

        self.encoder = torch.nn.ModuleList([pair(in_channels, f[0]), pair(f[0], f[1]), pair(f[1], f[2])])
        self.bottom = pair(f[2], f[3], dropout)
        self.pool = Pool["max", 3](kernel_size=2, stride=2)
        self.upsample = UpSample(3, scale_factor=2, mode="nontrainable", interp_mode="nearest", align_corners=None)
        self.decoder = torch.nn.ModuleList([pair(f[3] + f[2], f[2]), pair(f[2] + f[1], f[1]), pair(f[1] + f[0], f[0])])
        self.head = Convolution(3, f[0], out_channels, kernel_size=1, conv_only=True, bias=True)
        self.reset_parameters(init)

    def reset_parameters(self, init: str = "he_very_leaky") -> None:
        """(Re-)initialise every convolution and normalisation layer (section II-B4, Eq. 4; Glorot for the baseline).

        ``"he_very_leaky"`` draws weights from ``N(0, sqrt(9 / (5 fan_in)))``, He et al.'s ``sqrt(2 / ((1 + a^2)
        fan_in))`` for the slope ``a = 1/3`` of the very leaky ReLU, with ``fan_in`` = input channels x kernel
        volume; ``"xavier"`` uses ``torch.nn.init.xavier_uniform_``. Both apply to all 15 convolutions (the 1x1x1
        one too), set convolution biases to zero and normalisation layers to weight one, shift zero.

        Args:
            init: ``"he_very_leaky"`` or ``"xavier"``.

        Raises:
            ValueError: for another ``init``.
        """
        if init not in _INITS:
            raise ValueError(f"init must be one of {list(_INITS)}, got {init!r}.")
        for m in self.modules():
            if isinstance(m, torch.nn.Conv3d):
                if init == "xavier":
                    torch.nn.init.xavier_uniform_(m.weight)
                else:
                    fan_in = m.weight.shape[1] * math.prod(m.weight.shape[2:])
                    torch.nn.init.normal_(m.weight, 0.0, math.sqrt(9.0 / (5.0 * fan_in)))
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)
            elif isinstance(m, torch.nn.modules.batchnorm._NormBase | torch.nn.GroupNorm) and m.affine:
                torch.nn.init.ones_(m.weight)
                torch.nn.init.zeros_(m.bias)

    @classmethod
    def valid_input_size(cls, n: int) -> bool:
        """Whether ``n`` voxels is a valid input size for one spatial dimension (``n = 92 + 8k``, section II-A).

        Args:
            n: input size along one spatial dimension.

        Returns:
            ``True`` for 92, 100, 108, ...; ``False`` otherwise.
        """
        n = int(n)
        return n >= cls.min_input_size and (n - cls.min_input_size) % cls.size_step == 0

    @classmethod
    def output_size(cls, n: int) -> int:
        """Output size along one spatial dimension for input size ``n`` (``n - 88``, section II-A).

        Args:
            n: a valid input size (see :py:meth:`valid_input_size`).

        Returns:
            ``n - 88``.

        Raises:
            ValueError: when ``n`` is not a valid input size.
        """
        if not cls.valid_input_size(n):
            raise ValueError(cls._size_message(n))
        return int(n) - cls.size_difference

    @classmethod
    def _size_message(cls, n: int, where: str = "") -> str:
        k = (int(n) - cls.min_input_size) // cls.size_step
        below, above = cls.min_input_size + k * cls.size_step, cls.min_input_size + (k + 1) * cls.size_step
        nearest = f"{below} and {above}" if below >= cls.min_input_size else f"{cls.min_input_size}"
        return (
            f"ValidConvUNet input size {int(n)}{where} is not valid: each spatial size must be "
            f"{cls.min_input_size} + {cls.size_step}k (k >= 0); the nearest valid sizes are {nearest}."
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Analysis path: a pair of valid convolutions per level, max pooling between levels.

        Args:
            x: input ``[B, in_channels, *spatial]`` of valid spatial sizes.

        Returns:
            the features of levels 1 to 4, the coarsest last.
        """
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
            x = self.pool(x)
        features.append(self.bottom(x))
        return features

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Synthesis path: up-scale, concatenate the centre-cropped encoder features, convolve; then the 1x1x1 head.

        Args:
            features: the output of :py:meth:`encode`.

        Returns:
            logits ``[B, out_channels, *(spatial - 88)]``.
        """
        x = features[-1]
        for i, block in enumerate(self.decoder):  # levels 3, 2, 1 (indexing, not zip: TorchScript)
            x = self.upsample(x)
            x = block(torch.cat([x, center_crop_to(features[len(features) - 2 - i], x.shape[2:])], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``[B, in_channels, n1, n2, n3]``, each ``n = 92 + 8k``.

        Returns:
            logits ``[B, out_channels, n1 - 88, n2 - 88, n3 - 88]`` (softmax is applied by the loss and the
            post-processing).

        Raises:
            ValueError: when ``x`` is not 5-D, has the wrong number of channels or an invalid spatial size.
        """  # noqa: DOC502 (raised by _check_input, which TorchScript leaves out)
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self.decode(self.encode(x))

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor) -> None:
        """Refuse an input the network would silently mis-segment (eager mode; TorchScript leaves it out).

        Raises:
            ValueError: when ``x`` is not 5-D, has the wrong number of channels or an invalid spatial size.
        """
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input [B, {self.in_channels}, n1, n2, n3], got shape {tuple(x.shape)}.")
        for d, n in enumerate(x.shape[2:]):
            if not self.valid_input_size(n):
                raise ValueError(self._size_message(n, f" (spatial dimension {d} of shape {tuple(x.shape)})"))
