"""2D U-Net with per-pixel layer normalization for head CT neuroanatomy (Cai et al. 2020).

The network of J. C. Cai et al., *Fully Automated Segmentation of Head CT Neuroanatomy Using Deep Learning*
(Radiology: Artificial Intelligence 2020), Materials and Methods: "Model Architecture", "Model Training" (He
initialisation) and "Experiments" with Table 1,
with the details the text leaves open taken from the authors' Keras code: GitHub ``jasonccai/HeadCTSegmentation``,
file ``z_unet.py`` (function ``unet``; the same from its first commit 650df81, 2020-02-17, to the newest snapshot
but for a commented-out plot), with the number of classes set in ``z_controlboard.py``. That code says it "has
been updated to Tensorflow 2" (``tf.keras``); the paper trained on Keras 2.2.4 with TensorFlow 1.12, whose layer
normalization the repository does not show, but the paper's parameter count matches this code's layers exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from common.networks.batch_renorm import BatchRenorm2d

__all__ = ["NORMS", "ChannelLayerNorm2d", "UNet2DLayerNorm", "keras_he_normal_", "unet2d_ln_param_count"]

NORMS = ("layer", "batch", "batch_renorm", "none")

# standard deviation of a unit normal truncated to [-2, 2]; Keras's he_normal divides by it (see keras_he_normal_)
_TRUNCNORM_STD = 0.87962566103423978


class ChannelLayerNorm2d(torch.nn.Module):
    """Layer normalization of each pixel's feature vector over the channels, with a learned per-channel affine.

    For ``x`` of shape ``[B, C, H, W]``, each pixel ``(b, h, w)`` is normalized with the mean and the biased
    variance of its ``C`` features: ``y = (x - mean_c) / sqrt(var_c + eps) * gamma + beta``. This is Keras's
    ``LayerNormalization()`` with its defaults (``axis=-1``, the channels of a channels-last tensor;
    ``epsilon=1e-3``; ``center=True``, ``scale=True``, ``beta`` starting at 0 and ``gamma`` at 1) as the authors
    call it after every 3x3 convolution (``NormAndActivate`` in ``z_unet.py``). It is not ``GroupNorm(1, C)``,
    which normalizes over channels *and* space.

    The paper's Discussion says layer normalization "does not contain parameters that must be learned", but the
    authors' code keeps Keras's learned ``gamma`` and ``beta`` and the paper's own parameter count includes them
    (see :py:func:`unet2d_ln_param_count`), so they are learned here too.

    Args:
        num_channels: number of channels ``C``.
        eps: added to the variance (Keras's default 1e-3).
        affine: whether to learn ``gamma`` and ``beta`` (``weight`` and ``bias``).
    """

    def __init__(self, num_channels: int, eps: float = 1e-3, affine: bool = True) -> None:
        super().__init__()
        self.num_channels = int(num_channels)
        self.eps = float(eps)
        if affine:
            self.weight = torch.nn.Parameter(torch.ones(num_channels))
            self.bias = torch.nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize every pixel's channel vector.

        Args:
            x: ``[B, C, H, W]``.

        Returns:
            the normalized tensor, same shape.
        """
        y = F.layer_norm(x.permute(0, 2, 3, 1), [self.num_channels], self.weight, self.bias, self.eps)
        y = y.permute(0, 3, 1, 2)  # channels-last in memory: the next convolution runs in that layout
        # Training: back to PyTorch's default layout. oneDNN's channels-last 2D convolution backward made a training
        # step 1.3x slower on a 2-core AMD EPYC (3 x 1 x 256 x 256 slices: 16.5 s against 12.6 s). Inference keeps
        # channels-last, which oneDNN's forward runs fastest: the copy back cost the forward 1.5x (3 x 1 x 512 x
        # 512: 5.6 s against 3.5 s on a 2-core AMD EPYC with AVX-512). BENCHMARKS.md, head CT section.
        return y.contiguous() if torch.is_grad_enabled() else y


def _make_norm(norm: str, channels: int, norm_kwargs: dict) -> torch.nn.Module:
    if norm == "layer":
        return ChannelLayerNorm2d(channels, **{"eps": 1e-3, **norm_kwargs})
    if norm == "batch":  # Keras BatchNormalization defaults: epsilon=1e-3, momentum=0.99 (PyTorch's 0.01)
        return torch.nn.BatchNorm2d(channels, **{"eps": 1e-3, "momentum": 0.01, **norm_kwargs})
    if norm == "batch_renorm":
        return BatchRenorm2d(channels, **norm_kwargs)
    return torch.nn.Identity()


class _ConvNormAct(torch.nn.Sequential):
    """A zero-padded 3x3 convolution with bias, then the normalization, then ReLU (``Conv2D`` + ``NormAndActivate``)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, norm_kwargs: dict) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=True)
        self.norm = _make_norm(norm, out_channels, norm_kwargs)
        self.act = torch.nn.ReLU()


class _Level(torch.nn.Sequential):
    """Two :py:class:`_ConvNormAct` (one U-Net resolution level)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, norm_kwargs: dict) -> None:
        super().__init__()
        self.conv_0 = _ConvNormAct(in_channels, out_channels, norm, norm_kwargs)
        self.conv_1 = _ConvNormAct(out_channels, out_channels, norm, norm_kwargs)


class _UpConv(torch.nn.Sequential):
    """Nearest-neighbour up-sampling by 2, then a linear 2x2 convolution with bias and Keras ``'same'`` padding.

    Keras's ``UpSampling2D(size=(2, 2))`` (nearest by default) followed by ``Conv2D(c, 2, padding='same')``; for
    an even kernel TensorFlow's ``'same'`` pads one zero row at the bottom and one zero column at the right only,
    hence the explicit ``ZeroPad2d((0, 1, 0, 1))``. No normalization or activation follows (as in ``z_unet.py``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.upsample = torch.nn.Upsample(scale_factor=2.0, mode="nearest")
        self.pad = torch.nn.ZeroPad2d((0, 1, 0, 1))
        self.conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size=2, padding=0, bias=True)


def keras_he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Keras's ``he_normal`` in place: truncated normal at two standard deviations, variance ``2 / fan_in``.

    ``VarianceScaling(scale=2, mode='fan_in', distribution='truncated_normal')``: samples from a normal of standard
    deviation ``sqrt(2 / fan_in) / 0.8796...`` truncated to two of those deviations, the 0.8796 making the
    truncated distribution's standard deviation ``sqrt(2 / fan_in)`` (He et al. 2015). ``fan_in = k * k * c_in``.

    Args:
        weight: a convolution weight ``[c_out, c_in, k, k]``.

    Returns:
        ``weight``, filled.
    """
    fan_in = weight.shape[1] * weight.shape[2] * weight.shape[3]
    std = math.sqrt(2.0 / fan_in) / _TRUNCNORM_STD
    return torch.nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def unet2d_ln_param_count(
    in_channels: int = 1,
    out_channels: int = 12,
    features: Sequence[int] = (64, 128, 256, 512, 1024),
    norm_params_per_channel: int = 2,
) -> int:
    """Trainable parameters of :py:class:`UNet2DLayerNorm` by arithmetic (``k * k * c_in * c_out + c_out`` a conv).

    With the defaults: 31,024,448 convolution weights + 6,860 biases + 11,776 layer-norm parameters (``gamma`` and
    ``beta`` for the 5,888 channels of the 18 normalized convolutions) = 31,043,084. The paper's 31,042,499 is
    585 fewer: ``(64 + 1) * (12 - 3)``, the 1x1 head with 3 outputs instead of 12. That is the count of the authors'
    code with its ``nb_classes = 3`` (background, brain, CSF) of ``z_controlboard.py`` up to 2020-02-21, the
    public demo configuration; the 12-class setting arrived there in 2020-04. Everything else agrees to the unit.

    Args:
        in_channels: input channels.
        out_channels: output classes.
        features: channels per resolution level, from the top.
        norm_params_per_channel: 2 for layer norm, batch norm and batch renorm (``gamma``, ``beta``), 0 for none.

    Returns:
        the number of trainable parameters.
    """

    def conv(c_in: int, c_out: int, k: int) -> int:
        return k * k * c_in * c_out + c_out

    total, c = 0, in_channels
    for f in features:
        total += conv(c, f, 3) + conv(f, f, 3) + 2 * norm_params_per_channel * f
        c = f
    for f in reversed(features[:-1]):
        total += conv(c, f, 2) + conv(2 * f, f, 3) + conv(f, f, 3) + 2 * norm_params_per_channel * f
        c = f
    return total + conv(c, out_channels, 1)


class UNet2DLayerNorm(torch.nn.Module):
    """The Ronneberger 2D U-Net with zero padding and layer normalization of Cai et al. 2020 (head CT, 12 classes).

    Paper (Materials and Methods, "Model Architecture" and "Model Training"): four down-sampling steps take a
    512 x 512 x 1 slice to 32 x 32 x 1024 and four up-sampling steps back to 512 x 512 x 12 (11 structures plus
    background); layer normalization between every 3x3 convolution and its ReLU; softmax with categorical
    cross-entropy; He initialisation. The authors' ``z_unet.py`` (GitHub ``jasonccai/HeadCTSegmentation``) settles
    the rest, and this module follows it layer by layer:

    - analysis level ``k`` (``features`` 64, 128, 256, 512, 1024): ``Conv2D(f, 3, padding='same')`` with bias,
      ``LayerNormalization()``, ReLU, twice; 2x2 max pooling between levels;
    - synthesis level: ``UpSampling2D(2)`` (nearest) then a linear ``Conv2D(f, 2, padding='same')`` with bias
      (halving the channels, no norm, no activation), concatenation ``[skip, up]`` (skip first), then two
      ``Conv2D(f, 3)`` + norm + ReLU;
    - head: ``Conv2D(classes, 1)`` with bias. The authors apply softmax there; this module returns the logits and
      the softmax is applied by the loss and the post-processing, as MONAI bundles do;
    - initialisation: ``he_normal`` (truncated normal, see :py:func:`keras_he_normal_`) for every convolution but
      the head, which has no ``kernel_initializer`` in ``z_unet.py`` and so gets Keras's default
      ``glorot_uniform`` (``xavier_uniform_``); all biases 0; norm ``gamma`` 1, ``beta`` 0.

    ``norm`` switches the normalization for Table 1's variants: ``"layer"`` (models 2-5, the default model 3),
    ``"none"`` (model 1, the Ronneberger U-Net; convolution biases kept), ``"batch"`` (models 6 and 7:
    ``torch.nn.BatchNorm2d`` with Keras's defaults ``eps=1e-3``, ``momentum=0.01``) and ``"batch_renorm"`` (model
    8: :py:class:`~common.networks.batch_renorm.BatchRenorm2d`). ``norm_kwargs`` overrides the norm's constructor
    arguments (e.g. the renorm schedule's step counts).

    Parameters (defaults): 31,043,084 trainable with any of the three norms, 31,031,308 without; the paper's
    31,042,499 is the same network with a 3-class head (see :py:func:`unet2d_ln_param_count`).

    Args:
        in_channels: input channels (1: the CT slice).
        out_channels: output classes, background included (12).
        features: channels per resolution level, from the top; ``len(features) - 1`` poolings.
        norm: one of :py:data:`NORMS`.
        norm_kwargs: extra constructor arguments of the normalization layers.

    Raises:
        ValueError: for an unknown ``norm``, fewer than 2 levels, or non-positive channel counts.

    Input ``[B, in_channels, H, W]`` with ``H`` and ``W`` multiples of ``2 ** (len(features) - 1)`` (16) ->
    logits ``[B, out_channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 12,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str = "layer",
        norm_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
        features = tuple(int(f) for f in features)
        if len(features) < 2 or min(features) < 1:
            raise ValueError(f"features must list at least 2 positive channel counts, got {features}.")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}.")
        norm_kwargs = dict(norm_kwargs or {})
        self.norm = norm
        self.features = features
        self.divisor = 2 ** (len(features) - 1)

        self.down = torch.nn.ModuleList()
        c = in_channels
        for f in features:
            self.down.append(_Level(c, f, norm, norm_kwargs))
            c = f
        self.pool = torch.nn.MaxPool2d(kernel_size=2, stride=2)
        self.upconv = torch.nn.ModuleList()
        self.up = torch.nn.ModuleList()
        for f in reversed(features[:-1]):
            self.upconv.append(_UpConv(c, f))
            self.up.append(_Level(2 * f, f, norm, norm_kwargs))
            c = f
        self.head = torch.nn.Conv2d(c, out_channels, kernel_size=1, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as ``z_unet.py``: ``he_normal`` convolutions, ``glorot_uniform`` head, zero biases."""
        for m in self.modules():
            if isinstance(m, torch.nn.Conv2d):
                if m is self.head:
                    torch.nn.init.xavier_uniform_(m.weight)
                else:
                    keras_he_normal_(m.weight)
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Analysis path: a level of two convolutions, max pooling between levels.

        Args:
            x: input ``[B, in_channels, H, W]``.

        Returns:
            the features of every level, the deepest (``H / 16 x W / 16 x 1024`` by default) last.
        """
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        return skips

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """Synthesis path: up-convolve, concatenate ``[skip, up]``, two convolutions; then the 1x1 head.

        Args:
            skips: the output of :py:meth:`encode`.

        Returns:
            logits ``[B, out_channels, H, W]``.
        """
        x = skips[-1]
        n = len(skips)
        for i, (upconv, block) in enumerate(zip(self.upconv, self.up, strict=True)):
            x = block(torch.cat([skips[n - 2 - i], upconv(x)], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x``.

        Args:
            x: ``[B, in_channels, H, W]``, ``H`` and ``W`` multiples of :py:attr:`divisor` (16 by default).

        Returns:
            logits ``[B, out_channels, H, W]`` (softmax is applied by the loss and the post-processing).

        Raises:
            ValueError: when ``x`` is not 4-D or a spatial size is not a positive multiple of :py:attr:`divisor`.
        """
        if x.dim() != 4:
            raise ValueError("UNet2DLayerNorm expects [B, C, H, W], got shape " + str(list(x.shape)) + ".")
        h, w = x.shape[2], x.shape[3]
        if h < self.divisor or w < self.divisor or h % self.divisor != 0 or w % self.divisor != 0:
            raise ValueError(
                "UNet2DLayerNorm input size "
                + str(h)
                + " x "
                + str(w)
                + " is not valid: height and width must be multiples of "
                + str(self.divisor)
                + " (2 ** number of poolings), e.g. 512 x 512."
            )
        return self.decode(self.encode(x))
