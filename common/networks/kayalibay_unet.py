"""The multi-scale 3D U-Net of Kayalıbay et al. 2017 (hand MRI bones and BraTS), as the authors' code builds it.

B. Kayalıbay, G. Jensen, P. van der Smagt, *CNN-based segmentation of medical imaging data*, arXiv:1701.03056:
section 2.1 (architecture), Fig. 4 and Fig. 17, Appendix A (batch normalization, deconvolution) and Appendix B
(receptive field, Table 7). The figures leave open what the authors' Theano code settles; this module follows
GitHub ``BRML/CNNbasedMedicalSegmentation`` (read, not copied): network ``fcn_rffc4`` in ``model_defs.py`` (the
one "used in the final results"), ``fcn_rffc3`` for the summation variant, layers in ``conv3d/basic.py`` and
``conv3d/cnn3d.py``, initialisation in ``train.py``:

* **Contracting path** (Table 7 convolutions 1-7): 3x3x3 convolutions with 8, 8 (stride 2), 16, 32 (stride 2), 32,
  64 (stride 2), 64 features, each followed by batch normalization then PReLU (one learned slope per channel).
  A strided convolution is the full-resolution "same" convolution keeping every second voxel, i.e. PyTorch's
  ``Conv3d(stride=2, padding=1)``.
* **Residual shortcuts inside the blocks** (``'shortcut'`` layers 7, 14, 21 of ``fcn_rffc4``, not drawn in the
  paper's figures): at each lower level the strided convolution's output (before its normalization) is added to the
  next convolution's output (before its normalization); where the channel counts differ (8 -> 16) the shortcut is
  zero-padded in the channels (``projection='zero_pad'``: the 8 channels fill the first 8 of 16).
* **No biases**: ``Conv3d``/``Deconv`` default to ``use_bias=False`` in that code and no layer of ``fcn_rffc4``
  asks for one; batch normalization's shift plays that role, and the map convolutions have none either.
* **Expanding path**: per level a 1x1x1 convolution halving the features, a "deconvolution" = nearest-neighbour
  up-sampling by 2 then a 3x3x3 convolution (Appendix A, Fig. 16) to the skip's feature count, the long skip
  (concatenation ``[skip, up]``, as ``'concat', 'left': skip, 'right': up``; summation in ``fcn_rffc3``; or none),
  then a 3x3x3 convolution to twice the skip's features; each convolution followed by BN and PReLU.
* **Three segmentation maps** (section 2.1): 1x1x1 convolutions to the classes at 1/4, 1/2 and full resolution; the
  1/4 map is up-sampled by 2 with (tri)linear interpolation (``'bint'``: Theano's ``bilinear_upsampling``, border
  replicated, which is ``align_corners=False``) and added to the 1/2 map, the sum up-sampled and added to the full
  map; softmax follows (in the loss / post-processing, as MONAI networks return logits). ``multiscale=False``
  keeps the full-resolution map only.
* **Initialisation** (section 3.2.1): ``train.py`` draws the *whole* parameter vector from N(0, 0.01):
  convolution weights, batch-norm scales and shifts and PReLU slopes alike (``init="authors"``, the default);
  ``init="weights"`` draws only the convolution weights and leaves PyTorch's defaults (scale 1, shift 0, slope
  0.25) for the rest.
* **Batch normalization** (Appendix A): running averages with ``alpha = 0.5``. The paper's Eq. 6 weights the old
  average by ``alpha``, the code (``BatchNorm._forward``) the new batch value; at 0.5 both are the same, and both are
  PyTorch's ``momentum=0.5`` (``running = (1 - momentum) running + momentum batch``). Two small differences remain:
  the code divides by ``std + 1e-5`` and averages the standard deviation, PyTorch divides by
  ``sqrt(var + 1e-5)`` and averages the (unbiased) variance.

The receptive field of every 3x3x3 layer by the paper's Eq. 7 is :func:`table7_receptive_fields` (Table 7's
values); measured on this network by gradients it is exactly Eq. 7's through layer 10 and at layer 13, and differs
after the nearest-neighbour deconvolutions to 1/2 and full resolution (61 or 69 for 65, 69 for 71 and 73: see the
test), which the paper's "not a general formulation" allows. Inputs must have sides divisible by 8 (three stride-2
levels): :class:`KayalibayUNet3D` refuses others with a clear error, and the bundles pad for inference
(``DivisiblePadd``) and crop back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["MERGES", "INITS", "KayalibayUNet3D", "table7_receptive_fields"]

MERGES = ("concat", "sum", "none")
INITS = ("authors", "weights", "torch")
CONTRACTING = (8, 8, 16, 32, 32, 64, 64)  # Table 7 convolutions 1-7 (2, 4 and 6 strided)
BN_MOMENTUM = 0.5  # Appendix A's alpha = 0.5, see the module docstring
DIVISOR = 8  # three stride-2 levels


class _ConvBNPReLU(torch.nn.Module):
    """3x3x3 (or 1x1x1) convolution without bias, then BN and PReLU; ``residual`` adds a tensor before the BN."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm = torch.nn.BatchNorm3d(out_ch, eps=1e-5, momentum=BN_MOMENTUM)
        self.act = torch.nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: UP045 (TorchScript)
        """Return ``(activation, pre-normalization sum)``: the second is what a later shortcut adds."""
        y = self.conv(x)
        if residual is not None:
            y = y + _zero_pad_channels(residual, y.shape[1])
        return self.act(self.norm(y)), y


def _zero_pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``x`` with zero channels appended up to ``channels`` (the code's ``projection='zero_pad'``).

    Args:
        x: ``[B, C, ...]`` shortcut.
        channels: the channel count to reach.

    Returns:
        ``[B, channels, ...]``, ``x`` in the first ``C`` channels.

    Raises:
        ValueError: ``x`` has more channels than ``channels``.
    """
    missing = channels - x.shape[1]
    if missing < 0:
        raise ValueError("a shortcut cannot have more channels than the tensor it is added to.")
    if missing == 0:
        return x
    return F.pad(x, [0, 0, 0, 0, 0, 0, 0, missing])


class _UpLevel(torch.nn.Module):
    """1x1x1 halving, nearest x2 + 3x3x3 "deconvolution" to ``skip_ch``, merge with the skip, 3x3x3 to 2 skip_ch."""

    def __init__(self, in_ch: int, skip_ch: int, merge: str) -> None:
        super().__init__()
        self.merge = merge
        self.reduce = _ConvBNPReLU(in_ch, in_ch // 2, kernel=1)
        self.deconv = _ConvBNPReLU(in_ch // 2, skip_ch)
        merged = 2 * skip_ch if merge == "concat" else skip_ch
        self.conv = _ConvBNPReLU(merged, 2 * skip_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x, _ = self.reduce(x)
        x, _ = self.deconv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        if self.merge == "concat":
            x = torch.cat([skip, x], dim=1)
        elif self.merge == "sum":
            x = skip + x
        x, _ = self.conv(x)
        return x


class KayalibayUNet3D(torch.nn.Module):
    """The hand/BraTS network of Kayalıbay et al. 2017 (``fcn_rffc4``), with the paper's variants as switches.

    Args:
        in_channels: input channels (1 for hand MRI, 4 for BraTS' Flair, T1, T1C, T2).
        out_channels: classes including background (5 in both tasks).
        merge: long skips merged by ``"concat"`` (default, ``fcn_rffc4``), ``"sum"`` (``fcn_rffc3``) or ``"none"``
            (no long skips, section 4.1's comparison).
        multiscale: combine the three segmentation maps (default) or keep the full-resolution one only.
        init: ``"authors"`` (every parameter from N(0, ``init_std``), as ``train.py``), ``"weights"`` (convolution
            weights only) or ``"torch"`` (PyTorch's defaults).
        init_std: the standard deviation of the initialisation (paper: 0.01).

    ``forward(x)``: ``x`` is ``[B, in_channels, X, Y, Z]`` with each side divisible by 8; returns logits of shape
    ``[B, out_channels, X, Y, Z]``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 5,
        merge: str = "concat",
        multiscale: bool = True,
        init: str = "authors",
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {list(MERGES)}, got {merge!r}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}.")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.merge, self.multiscale = merge, bool(multiscale)
        f = CONTRACTING
        self.conv1 = _ConvBNPReLU(in_channels, f[0])
        self.conv2 = _ConvBNPReLU(f[0], f[1], stride=2)
        self.conv3 = _ConvBNPReLU(f[1], f[2])
        self.conv4 = _ConvBNPReLU(f[2], f[3], stride=2)
        self.conv5 = _ConvBNPReLU(f[3], f[4])
        self.conv6 = _ConvBNPReLU(f[4], f[5], stride=2)
        self.conv7 = _ConvBNPReLU(f[5], f[6])
        # expanding path: Table 7 convolutions (8) 9 10 at 1/4, (11) 12 13 at 1/2, (14) 15 16 at full resolution
        self.up3 = _UpLevel(f[6], f[4], merge)  # 64 -> 32, merge with conv5 (32), -> 64
        self.up2 = _UpLevel(2 * f[4], f[2], merge)  # 64 -> 32, merge with conv3 (16), -> 32
        self.up1 = _UpLevel(2 * f[2], f[0], merge)  # 32 -> 16, merge with conv1 (8), -> 16
        self.map_full = torch.nn.Conv3d(2 * f[0], out_channels, 1, bias=False)
        if self.multiscale:
            self.map_quarter = torch.nn.Conv3d(2 * f[4], out_channels, 1, bias=False)
            self.map_half = torch.nn.Conv3d(2 * f[2], out_channels, 1, bias=False)
        self._initialise(init, float(init_std))

    def _initialise(self, init: str, std: float) -> None:
        if init == "torch":
            return
        with torch.no_grad():
            for name, p in self.named_parameters():
                if init == "authors" or (name.endswith("weight") and p.ndim == 5):
                    p.normal_(0.0, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` into class logits of the same size.

        Args:
            x: ``[B, in_channels, X, Y, Z]``, each side divisible by 8.

        Returns:
            ``[B, out_channels, X, Y, Z]`` logits (the three maps summed when ``multiscale``).

        Raises:
            ValueError: not 5D, or a side not divisible by 8 (the message says to pad).
        """
        divisible = x.ndim == 5
        for side in x.shape[2:]:
            divisible = divisible and side % 8 == 0
        if not divisible:
            raise ValueError(
                "KayalibayUNet3D needs [B, C, X, Y, Z] with every side divisible by 8 (three stride-2 levels), got "
                + f"shape {list(x.shape)}; pad the volume (e.g. DivisiblePadd(k=8))."
            )
        s1, _ = self.conv1(x)
        a, pre = self.conv2(s1)
        s2, _ = self.conv3(a, residual=pre)
        a, pre = self.conv4(s2)
        s3, _ = self.conv5(a, residual=pre)
        a, pre = self.conv6(s3)
        bottom, _ = self.conv7(a, residual=pre)
        q = self.up3(bottom, s3)
        h = self.up2(q, s2)
        full = self.map_full(self.up1(h, s1))
        if not self.multiscale:
            return full
        combined = self.map_half(h) + _upsample_linear(self.map_quarter(q))
        return full + _upsample_linear(combined)


def _upsample_linear(x: torch.Tensor) -> torch.Tensor:
    """Up-sample a segmentation map by 2 with trilinear interpolation (the code's ``'bint'`` layer).

    Args:
        x: ``[B, C, X, Y, Z]`` map.

    Returns:
        ``[B, C, 2X, 2Y, 2Z]``.
    """
    return F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


def table7_receptive_fields(filter_sizes: Sequence[int] = (3,) * 13) -> list[int]:
    """The receptive field of each 3x3x3 convolution of Table 7 by the paper's Eq. 7.

    ``phi_i = phi_{i-1} + 2^(eta - tau) (filter size - 1)``, ``phi_0 = 1``, with ``eta`` the strided convolutions and
    ``tau`` the deconvolutions *before* layer ``i`` (a strided convolution convolves at the finer resolution, then
    drops voxels; a deconvolution repeats voxels, then convolves at the finer resolution).

    Args:
        filter_sizes: the filter size of Table 7's layers 1-7, 9, 10, 12, 13, 15, 16 (all 3).

    Returns:
        the 13 receptive fields, in voxels per side: 3, 5, 9, 13, 21, 29, 45, 53, 61, 65, 69, 71, 73.
    """
    strided = {2, 4, 6}  # Table 7 numbering
    deconv = {9, 12, 15}
    layers = [1, 2, 3, 4, 5, 6, 7, 9, 10, 12, 13, 15, 16]
    phi, eta, tau, fields = 1, 0, 0, []
    for number, size in zip(layers, filter_sizes, strict=True):
        if number in deconv:
            tau += 1
        phi += 2 ** (eta - tau) * (size - 1)
        fields.append(phi)
        if number in strided:
            eta += 1
    return fields
