"""True (non-separable) 4D convolution over (X, Y, Z, T) built on ``conv3d``, and the 4D layers around it.

Implements the 4D convolutions of the cardiac CCTA 4D CNN paper (section 3.1, "4D convolutions"; the layer sizes of
its Table 1 and section 3): a 4D convolution is a sum over the kernel's time offsets of 3D convolutions, rearranged
so that no 3D convolution is repeated, with zero, mirror-reflection or replication padding of the time axis (and,
here, circular padding as well: a cardiac cycle is periodic).

Layout: tensors are ``[B, C, X, Y, Z, T]``, time last. How the layer computes it (time folded into the batch,
``W_g`` the 3D kernel at time offset ``g``, ``k_t`` offsets, time stride ``s_t``):

- time stride 1: **one** ``conv3d`` from ``C_in`` to ``k_t * C_out`` channels (the ``k_t`` kernels stacked) over the
  ``T`` input frames, then a shifted sum of the ``k_t`` channel groups along time: ``y[t] = sum_g z[t + g - p, g]``.
  Time padding costs nothing: a padded frame is a copy of a real frame (or zero), so its 3D convolution is the same
  copy of the real frame's, and the shifted sum reads it there (or skips it); the multiply-adds are exactly those of
  the 4D convolution, and the input is never padded or unfolded in time.
- time stride 2: output frame ``t`` reads padded frame ``2t + g``, so offset ``g`` only ever meets frames of one
  parity. One ``conv3d`` per parity (``min(s_t, k_t)`` calls, 2 for a 3x3x3x3 kernel), each over the frames of
  that parity only and with the kernels of the offsets that read them, then the same shifted sum: only the frames
  kept are computed.
- the input frames each ``conv3d`` reads are gathered straight from the input in one pass (for time stride 2, the
  frames of one parity; in any input layout), and those gathered inputs are what the layer keeps for the backward,
  not the input: for stride 1, and for stride 2 with zero padding, they hold exactly the input's elements, so the
  backward never gathers them again.
- backward (a custom :py:class:`torch.autograd.Function`): the gradient of the stacked convolution's output is
  built once from the output gradient (the shifted sum's adjoint), then one ``convolution_backward`` call per
  ``conv3d`` gives the input and weight gradients together; the ``k_t``-times larger stacked output is never kept.
  For several calls (time stride 2), each call's input gradient is written straight into its frames of the result,
  in the input's layout. Plain autograd through the same forward allocates a full-size zero gradient per slice of
  the shifted sum; the custom backward took a third off forward+backward at the paper's first layer
  (``BENCHMARKS.md``, "Conv4d"). It is first-order only (``once_differentiable``).
- a Python loop runs over the ``k_t`` time offsets (and the padded edge frames they read), never over output frames.

Inside, activations are "folded": ``[B, T, X, Y, Z, C]`` in memory, i.e. time in the batch and ``channels_last_3d``
for ``conv3d``, which oneDNN ran about twice as fast as the default layout here at 8 channels (cuDNN's 3D kernels
work in that layout too). The layout of the output follows the input's, as ``channels_last`` does in PyTorch: a
contiguous input gives a contiguous output, a folded input (:py:func:`to_time_major`) a folded output, which saves
the transposes around the layer (a transpose of a 6-D tensor costs several plain copies: at 32 channels they are
what is left between this layer and one equal-MAC ``conv3d``). ``torch.nn.GroupNorm`` returns contiguous tensors;
:py:class:`GroupNorm4d` (the same normalization) and :py:class:`UpSample4d` keep a folded input folded, so the
paper's network can stay time-major from its first layer to its last (``BENCHMARKS.md``: its residual block ran
faster that way at every level).

Autocast: the layer casts its input, weight and bias to the autocast dtype, as autocast does for ``conv3d``, and
runs its custom backward in that dtype. ``torch.utils.checkpoint`` (re-entrant or not) works as for any layer.
Device and dtype follow the input (CPU and CUDA alike: only ``conv3d`` and its backward touch the device).

Export: :py:class:`Conv4d`, :py:class:`GroupNorm4d` and :py:class:`UpSample4d` compile with ``torch.jit.script``
(Conv4d's scripted forward uses a plain-autograd implementation: time padded explicitly, one ``conv3d`` per
time-stride phase, slices and adds) and trace with ``torch.jit.trace`` and ``torch.export.export`` (the same plain
path is taken whenever ``torch.jit.is_tracing()``, ``torch.onnx.is_in_onnx_export()`` or
``torch.compiler.is_compiling()`` is true), so the graphs hold only ``conv3d``/``convolution``,
``constant_pad_nd``/``index_select``, slicing, ``add``, ``permute``/``reshape`` and ``group_norm``, all of which ONNX
has. ONNX export itself is not tested here (the environment has neither ``onnx`` nor ``onnxscript``).

MONAI's layer factories: :py:func:`register_monai_4d` wraps the ``Conv.CONV`` and ``Norm.GROUP`` factory functions
so that dimension 4 gives :py:class:`Conv4d` and :py:class:`GroupNorm4d` and dimensions 1-3 go to MONAI's original
functions; then ``Convolution(spatial_dims=4, ...)``, ``ResidualUnit(spatial_dims=4, ...)`` and other blocks built
on ``Conv[Conv.CONV, spatial_dims]`` build 4D layers. MONAI's instance and batch normalization, transposed
convolution, pooling and ``UpSample`` have no 4D form here (use :py:class:`UpSample4d` for the paper's
nearest-neighbour up-sampling). Because ``Convolution`` does not pass a time padding mode,
:py:func:`set_time_padding_mode` sets it on the layers built that way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "TIME_PADDING_MODES",
    "Conv4d",
    "GroupNorm4d",
    "UpSample4d",
    "conv4d",
    "group_norm4d",
    "register_monai_4d",
    "set_time_padding_mode",
    "to_time_major",
    "upsample_nearest4d",
]

#: how the time axis may be padded: with zeros, by mirror reflection (edge frame not repeated, as ``F.pad``'s
#: "reflect"), by replicating the edge frame, or circularly (the cycle wraps around)
TIME_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# ----------------------------------------------------------------------------------------------------------------
# argument and input checks
# ----------------------------------------------------------------------------------------------------------------


def _quadruple(value: int | Sequence[int], name: str, minimum: int) -> list[int]:
    """Read a per-dimension argument.

    Returns:
        ``value`` as four ints (X, Y, Z, T).

    Raises:
        ValueError: naming ``name`` when ``value`` is not one int or four, each at least ``minimum``.
    """
    values = [value] * 4 if isinstance(value, int) else list(value) if isinstance(value, Sequence) else []
    if len(values) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
        raise ValueError(
            f"{name} must be an int or a sequence of 4 ints (X, Y, Z, T), each >= {minimum}; got {value!r}."
        )
    return values


def _check_mode(mode: str) -> None:
    if mode not in TIME_PADDING_MODES:
        raise ValueError(f"time_padding_mode must be one of {TIME_PADDING_MODES}; got {mode!r}.")


def _check_input(
    x: torch.Tensor, in_channels: int, kernel: list[int], padding: list[int], time_padding_mode: str
) -> None:
    """Refuse an input the convolution cannot take (TorchScript-compatible).

    Raises:
        ValueError: for an input that is not 6-D or has the wrong channels, a dimension smaller than the kernel after
            padding, or a time axis too short for reflect or circular padding.
    """
    if x.dim() != 6:
        raise ValueError(f"Conv4d expects an input [B, C, X, Y, Z, T] (6-D), got shape {x.shape}.")
    if x.shape[1] != in_channels:
        raise ValueError(f"Conv4d expects {in_channels} input channels, got shape {x.shape}.")
    for d in range(4):
        if x.shape[2 + d] + 2 * padding[d] < kernel[d]:
            raise ValueError(
                f"Conv4d input shape {x.shape}: dimension {2 + d} of size {x.shape[2 + d]} with padding "
                f"{padding[d]} is smaller than the kernel size {kernel[d]}."
            )
    frames = x.shape[5]
    if time_padding_mode == "reflect" and padding[3] >= frames:
        raise ValueError(
            f"reflect time padding of {padding[3]} needs more than {padding[3]} frames; got shape {x.shape}."
        )
    if time_padding_mode == "circular" and padding[3] > frames:
        raise ValueError(
            f"circular time padding of {padding[3]} needs at least {padding[3]} frames; got shape {x.shape}."
        )


# ----------------------------------------------------------------------------------------------------------------
# time padding as an index map (shared by the fast and the plain path)
# ----------------------------------------------------------------------------------------------------------------


def _time_source(q: int, frames: int, pad: int, mode: str) -> int:
    """Map a padded time position to the real frame it holds (TorchScript-compatible).

    Valid for ``pad < frames`` (reflect) and ``pad <= frames`` (circular), which :py:func:`_check_input` ensures.

    Returns:
        the frame index in ``[0, frames)``, or -1 for a zero frame.
    """
    f = q - pad
    if f >= 0 and f < frames:
        return f
    if mode == "zeros":
        return -1
    if mode == "replicate":
        return min(max(f, 0), frames - 1)
    if mode == "circular":
        return (f + frames) % frames
    return -f if f < 0 else 2 * (frames - 1) - f  # reflect, the edge frame not repeated


def _padded_time_index(frames: int, pad: int, mode: str) -> list[int]:
    """Map every padded time position to its real frame (TorchScript-compatible).

    Returns:
        ``frames + 2 * pad`` frame indices, -1 for zero frames.
    """
    return [_time_source(q, frames, pad, mode) for q in range(frames + 2 * pad)]


class _Term(NamedTuple):
    """One time offset's contribution: ``out[t0 + i] += z[row0 + i, slot]`` for ``i < length``, then the rest."""

    slot: int
    t0: int
    row0: int
    length: int
    rest_t: tuple[int, ...]
    rest_rows: tuple[int, ...]


class _Call(NamedTuple):
    """One ``conv3d``: these input frames, the kernels of these time offsets stacked along the output channels."""

    frames: tuple[int, ...]
    frame_slice: tuple[int, int, int] | None  # (start, stop, step) when the frames are a range
    groups: tuple[int, ...]
    terms: tuple[_Term, ...]


class _Plan(NamedTuple):
    t_out: int
    calls: tuple[_Call, ...]
    frames_partitioned: bool  # every input frame is read by exactly one call


def _longest_run(pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """Find the longest stretch of ``(t, row)`` pairs in which both step by one.

    Returns:
        its start and length.
    """
    best_start, best_len, start = 0, 1, 0
    for i in range(1, len(pairs) + 1):
        if i == len(pairs) or pairs[i][0] != pairs[i - 1][0] + 1 or pairs[i][1] != pairs[i - 1][1] + 1:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = i
    return best_start, best_len


@functools.lru_cache(maxsize=512)
def _time_plan(frames: int, k_t: int, s_t: int, p_t: int, mode: str) -> _Plan:
    """Work out which ``conv3d`` calls to make and how to sum their outputs along time (once per configuration).

    Returns:
        the plan: output frames, calls (frames, time offsets, terms) and whether the calls partition the frames.
    """
    t_out = (frames + 2 * p_t - k_t) // s_t + 1
    calls = []
    for phase in range(min(s_t, k_t)):
        pairs = {}
        for g in range(phase, k_t, s_t):
            sources = [(t, _time_source(s_t * t + g, frames, p_t, mode)) for t in range(t_out)]
            pairs_g = [(t, f) for t, f in sources if f >= 0]
            if pairs_g:
                pairs[g] = pairs_g
        if not pairs:
            continue
        used = tuple(sorted({f for pairs_g in pairs.values() for _, f in pairs_g}))
        row = {f: i for i, f in enumerate(used)}
        step = used[1] - used[0] if len(used) > 1 else 1
        is_range = all(b - a == step for a, b in zip(used, used[1:], strict=False))
        terms = []
        for slot, pairs_g in enumerate(pairs.values()):
            rows = [(t, row[f]) for t, f in pairs_g]
            start, length = _longest_run(rows)
            rest = rows[:start] + rows[start + length :]
            rest_t, rest_rows = tuple(t for t, _ in rest), tuple(r for _, r in rest)
            terms.append(_Term(slot, rows[start][0], rows[start][1], length, rest_t, rest_rows))
        calls.append(_Call(used, (used[0], used[-1] + 1, step) if is_range else None, tuple(pairs), tuple(terms)))
    counts = [0] * frames
    for call in calls:
        for f in call.frames:
            counts[f] += 1
    return _Plan(t_out, tuple(calls), all(c == 1 for c in counts))


# ----------------------------------------------------------------------------------------------------------------
# the fast path: time folded into the batch, channels last ("folded" memory order [B, T, X, Y, Z, C])
# ----------------------------------------------------------------------------------------------------------------


def _is_folded(x: torch.Tensor) -> bool:
    """Tell whether ``x`` (``[B, C, X, Y, Z, T]``) is laid out ``[B, T, X, Y, Z, C]`` in memory.

    Returns:
        True when it is, and is not also contiguous as it stands (then it counts as contiguous).
    """
    return x.permute(0, 5, 2, 3, 4, 1).is_contiguous() and not x.is_contiguous()


def _fold(x: torch.Tensor) -> torch.Tensor:
    """Bring ``x`` of ``[B, C, X, Y, Z, T]`` into the folded memory order.

    Returns:
        a contiguous ``[B, T, X, Y, Z, C]`` (a view of ``x`` when it is folded already).
    """
    return x.permute(0, 5, 2, 3, 4, 1).contiguous()


def _unfold(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Give a folded ``[B, T, X, Y, Z, C]`` tensor the logical shape ``[B, C, X, Y, Z, T]`` and the layout of ``like``.

    Returns:
        a view of ``m`` when ``like`` is folded, else a contiguous copy.
    """
    x = m.permute(0, 5, 2, 3, 4, 1)
    return x if _is_folded(like) else x.contiguous()


def _index(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Make an index tensor.

    Returns:
        ``values`` as a long tensor on ``device``.
    """
    return torch.tensor(values, dtype=torch.long, device=device)


def _call_input(xv: torch.Tensor, call: _Call) -> torch.Tensor:
    """Gather the input frames of one ``conv3d`` call, time folded into the batch, in one pass over them.

    Args:
        xv: the input seen as ``[B, T, X, Y, Z, C]`` (``x.permute(0, 5, 2, 3, 4, 1)``, any strides).
        call: the call.

    Returns:
        ``[B * n, C, X, Y, Z]`` in ``channels_last_3d`` memory order (a view of ``xv`` when it is contiguous and the
        call reads every frame).
    """
    if call.frame_slice is not None:
        start, stop, step = call.frame_slice
        frames = xv if (start, stop, step) == (0, xv.shape[1], 1) else xv[:, start:stop:step]
    else:
        frames = xv.index_select(1, _index(call.frames, xv.device))
    frames = frames.contiguous()
    return frames.view(-1, *frames.shape[2:]).permute(0, 4, 1, 2, 3)


def _call_weight(weight: torch.Tensor, call: _Call) -> torch.Tensor:
    """Stack the 3D kernels of the call's time offsets along the output channels.

    Returns:
        ``[n_g * C_out, C_in, kx, ky, kz]``, offset-major.
    """
    if call.groups != tuple(range(weight.shape[5])):
        weight = weight.index_select(5, _index(call.groups, weight.device))
    return weight.permute(5, 0, 1, 2, 3, 4).reshape(-1, *weight.shape[1:5])


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """Read a ``[N, C, X, Y, Z]`` tensor in ``[N, X, Y, Z, C]`` memory order.

    Returns:
        a contiguous ``[N, X, Y, Z, C]`` (a view when ``t`` is ``channels_last_3d``).
    """
    return t.permute(0, 2, 3, 4, 1).contiguous()


def _fast_forward(
    inputs: list[torch.Tensor],
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    plan: _Plan,
    batch_size: int,
    spatial: tuple[int, int, int],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Make the ``conv3d`` calls of ``plan`` on their gathered inputs and sum their outputs with the right time shifts.

    Args:
        inputs: the gathered input of each call (:py:func:`_call_input`).
        weight: ``[C_out, C_in, kx, ky, kz, kt]``.
        bias: ``[C_out]`` or None.
        stride: spatial stride.
        padding: spatial padding.
        plan: the time plan.
        batch_size: ``B``.
        spatial: the input's ``(X, Y, Z)``.
        out: a contiguous ``[B, T_out, X', Y', Z', C_out]`` to write into, or None to allocate one.

    Returns:
        the folded output ``[B, T_out, X', Y', Z', C_out]`` (``out`` when given).
    """
    batch, c_out, t_out = batch_size, weight.shape[0], plan.t_out
    if out is None:
        sizes = zip(spatial, padding, weight.shape[2:5], stride, strict=True)
        out_shape = (batch, t_out, *[(n + 2 * p - k) // s + 1 for n, p, k, s in sizes], c_out)
        out = weight.new_empty(out_shape)
    started = False
    for call, xc in zip(plan.calls, inputs, strict=True):
        z = F.conv3d(xc, _call_weight(weight, call), None, stride, padding)
        z = _channels_last(z).view(batch, len(call.frames), *z.shape[2:], len(call.groups), c_out)
        first = None
        if not started:  # start from a term that covers every output frame, else from zeros
            first = next((term for term in call.terms if term.length == t_out), None)
            if first is None:
                out.zero_()
            else:
                out.copy_(z[:, first.row0 : first.row0 + t_out, :, :, :, first.slot])
            started = True
        for term in call.terms:
            if term is first:
                continue
            if term.length:
                out[:, term.t0 : term.t0 + term.length] += z[:, term.row0 : term.row0 + term.length, ..., term.slot, :]
            if term.rest_t:
                rest = z.select(5, term.slot).index_select(1, _index(term.rest_rows, z.device))
                out.index_add_(1, _index(term.rest_t, z.device), rest)
        del z
    if not started:  # no frame reaches any kernel offset (zero padding wider than the kernel): bias only
        out.zero_()
    if bias is not None:
        out += bias
    return out


class _Conv4dFunction(torch.autograd.Function):
    """Conv4d with the stacked-kernel forward and a backward of one ``convolution_backward`` per ``conv3d``."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, plan):
        xv = x.permute(0, 5, 2, 3, 4, 1)
        inputs = [_call_input(xv, call) for call in plan.calls]
        # the gathered inputs are kept rather than x: the backward needs them in this layout, and for the layers used
        # (stride 1, or stride 2 with every frame read once) they hold exactly x's elements
        ctx.save_for_backward(weight, *inputs)
        folded = _is_folded(x)
        ctx.conv = (stride, padding, plan, bias is not None, tuple(x.shape), folded)
        spatial = tuple(x.shape[2:5])
        if not folded:
            out = _fast_forward(inputs, weight, bias, stride, padding, plan, x.shape[0], spatial)
            return out.permute(0, 5, 2, 3, 4, 1).contiguous()
        # a folded output must not be a view made here (autograd refuses in-place changes of such views, e.g. a
        # residual "+="): allocate it as a tensor of its own with the folded strides, and fill it through a view
        sizes = zip(spatial, padding, weight.shape[2:5], stride, strict=True)
        folded_shape = (x.shape[0], plan.t_out, *[(n + 2 * p - k) // s + 1 for n, p, k, s in sizes], weight.shape[0])
        strides = [math.prod(folded_shape[i + 1 :]) for i in range(6)]  # of the contiguous folded order
        result = torch.empty_strided(
            [folded_shape[i] for i in (0, 5, 2, 3, 4, 1)],
            [strides[i] for i in (0, 5, 2, 3, 4, 1)],
            dtype=weight.dtype,
            device=weight.device,
        )
        view = result.permute(0, 5, 2, 3, 4, 1)
        _fast_forward(inputs, weight, bias, stride, padding, plan, x.shape[0], spatial, view)
        return result

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        weight, *inputs = ctx.saved_tensors
        stride, padding, plan, has_bias, x_shape, folded = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        batch, c_out = x_shape[0], weight.shape[0]
        gy = _fold(grad_out)  # [B, T_out, X', Y', Z', C_out]
        single = len(plan.calls) == 1 and plan.calls[0].frames == tuple(range(x_shape[5]))
        grad_x = grad_xv = grad_w = None
        if need_x and not single:  # written frame by frame, straight into the input's layout
            layout = (0, 5, 2, 3, 4, 1) if folded else (0, 1, 2, 3, 4, 5)
            shape = [x_shape[i] for i in layout]
            grad_x = (torch.empty if plan.frames_partitioned else torch.zeros)(
                shape, dtype=gy.dtype, device=gy.device
            ).permute(*layout)  # the permutation is its own inverse
            grad_xv = grad_x.permute(0, 5, 2, 3, 4, 1)
        if need_w:
            grad_w = torch.zeros_like(weight)
        for call, xc in zip(plan.calls, inputs, strict=True):
            n_frames, n_groups = len(call.frames), len(call.groups)
            gz = gy.new_empty(batch, n_frames, *gy.shape[2:5], n_groups, c_out)
            for term in call.terms:  # the adjoint of the shifted sum
                slot = gz.select(5, term.slot)
                slot[:, : term.row0].zero_()
                slot[:, term.row0 + term.length :].zero_()
                slot[:, term.row0 : term.row0 + term.length].copy_(gy[:, term.t0 : term.t0 + term.length])
                if term.rest_t:
                    rest = gy.index_select(1, _index(term.rest_t, gy.device))
                    slot.index_add_(1, _index(term.rest_rows, gy.device), rest)
            gx, gw, _ = torch.ops.aten.convolution_backward(
                gz.view(batch * n_frames, *gy.shape[2:5], n_groups * c_out).permute(0, 4, 1, 2, 3),
                xc,
                _call_weight(weight, call),
                None,
                list(stride),
                list(padding),
                [1, 1, 1],
                False,
                [0, 0, 0],
                1,
                [need_x, need_w, False],
            )
            del gz
            if need_x:
                gx = _channels_last(gx).view(batch, n_frames, *x_shape[2:5], x_shape[1])
                if single:
                    grad_x = gx.permute(0, 5, 2, 3, 4, 1)
                    if not folded:
                        grad_x = grad_x.contiguous()
                elif call.frame_slice is not None:
                    start, stop, step = call.frame_slice
                    target = grad_xv[:, start:stop:step]
                    target.copy_(gx) if plan.frames_partitioned else target.add_(gx)
                else:
                    index = _index(call.frames, gx.device)
                    grad_xv.index_copy_(1, index, gx) if plan.frames_partitioned else grad_xv.index_add_(1, index, gx)
            if need_w:
                gw = gw.reshape(n_groups, c_out, *weight.shape[1:5]).permute(1, 2, 3, 4, 5, 0)
                grad_w.index_copy_(5, _index(call.groups, gw.device), gw)
        grad_b = grad_out.sum(dim=(0, 2, 3, 4, 5)) if (need_b and has_bias) else None
        return grad_x, grad_w, grad_b, None, None, None


# ----------------------------------------------------------------------------------------------------------------
# the plain path (TorchScript, tracing, export, torch.compile)
# ----------------------------------------------------------------------------------------------------------------


def _conv4d_plain(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    time_padding_mode: str,
) -> torch.Tensor:
    """Conv4d with plain autograd and export-friendly ops: time padded explicitly, one ``conv3d`` per stride phase.

    TorchScript-compatible; the same stacked-kernel scheme as the fast path, but over the padded frames.

    Returns:
        ``[B, C_out, X', Y', Z', T']``, contiguous.

    Raises:
        ValueError: never for a kernel of at least one frame (TorchScript needs the branch).
    """
    batch, c_in, frames = x.shape[0], x.shape[1], x.shape[5]
    c_out, k_t = weight.shape[0], weight.shape[5]
    s_t, p_t = stride[3], padding[3]
    xt = x.permute(0, 5, 1, 2, 3, 4)
    if p_t > 0:
        if time_padding_mode == "zeros":
            xt = F.pad(xt, [0, 0, 0, 0, 0, 0, 0, 0, p_t, p_t])
        else:
            index = _padded_time_index(frames, p_t, time_padding_mode)
            xt = xt.index_select(1, torch.tensor(index, dtype=torch.long, device=x.device))
    t_out = (frames + 2 * p_t - k_t) // s_t + 1
    out: torch.Tensor | None = None
    for phase in range(min(s_t, k_t)):
        n_groups = (k_t - 1 - phase) // s_t + 1
        n_frames = t_out + n_groups - 1
        xf = xt[:, phase : phase + s_t * (n_frames - 1) + 1 : s_t]
        xf = xf.reshape(batch * n_frames, c_in, x.shape[2], x.shape[3], x.shape[4])
        w = weight[:, :, :, :, :, phase::s_t].permute(5, 0, 1, 2, 3, 4)
        w = w.reshape(n_groups * c_out, c_in, w.shape[3], w.shape[4], w.shape[5])
        z = F.conv3d(xf, w, None, stride[:3], padding[:3])
        z = z.reshape(batch, n_frames, n_groups, c_out, z.shape[2], z.shape[3], z.shape[4])
        for m in range(n_groups):
            term = z[:, m : m + t_out, m]
            out = term if out is None else out + term
    if out is None:
        raise ValueError("Conv4d: empty time kernel.")  # unreachable: k_t >= 1 gives phase 0 a group
    if bias is not None:
        out = out + bias.view(1, 1, -1, 1, 1, 1)
    return out.permute(0, 2, 3, 4, 5, 1).contiguous()


def _use_plain_path() -> bool:
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


# ----------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------


def conv4d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    time_padding_mode: str = "zeros",
) -> torch.Tensor:
    """4D convolution over (X, Y, Z, T), the functional form of :py:class:`Conv4d` (cardiac 4D CNN paper, 3.1).

    ``y[b, o, x, y, z, t] = bias[o] + sum_{i, dx, dy, dz, dt} weight[o, i, dx, dy, dz, dt] *
    x_pad[b, i, sx x + dx, sy y + dy, sz z + dz, st t + dt]`` (cross-correlation, as ``conv3d``), where ``x_pad`` is
    zero-padded in space and padded in time by ``time_padding_mode``.

    Args:
        x: input ``[B, C_in, X, Y, Z, T]``; any memory layout (a folded input gives a folded output).
        weight: ``[C_out, C_in, kx, ky, kz, kt]``, same dtype and device as ``x``.
        bias: ``[C_out]`` or None.
        stride: one int or four (X, Y, Z, T), each >= 1.
        padding: one int or four (X, Y, Z, T), each >= 0; zeros in space, ``time_padding_mode`` in time.
        time_padding_mode: one of :py:data:`TIME_PADDING_MODES`.

    Returns:
        ``[B, C_out, X', Y', Z', T']`` with ``n' = (n + 2 p - k) // s + 1`` per dimension.

    Raises:
        ValueError: for a bad stride, padding or mode, an input that is not 6-D or does not match ``weight``, a
            dimension smaller than the kernel after padding, or a time axis too short for the padding (reflect
            needs ``T > p_t`` frames, circular ``T >= p_t``).
    """
    stride4 = _quadruple(stride, "stride", 1)
    padding4 = _quadruple(padding, "padding", 0)
    _check_mode(time_padding_mode)
    if weight.dim() != 6:
        raise ValueError(f"conv4d expects a weight [C_out, C_in, kx, ky, kz, kt], got shape {tuple(weight.shape)}.")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv4d expects a bias of shape ({weight.shape[0]},), got {tuple(bias.shape)}.")
    _check_input(x, weight.shape[1], list(weight.shape[2:]), padding4, time_padding_mode)
    device_type = x.device.type
    if (
        x.is_floating_point()
        and x.dtype != torch.float64
        and torch.amp.is_autocast_available(device_type)
        and torch.is_autocast_enabled(device_type)
    ):  # what autocast does for conv3d: compute in the autocast dtype
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return conv4d(
                x.to(dtype),
                weight.to(dtype),
                None if bias is None else bias.to(dtype),
                stride4,
                padding4,
                time_padding_mode,
            )
    if _use_plain_path():
        return _conv4d_plain(x, weight, bias, stride4, padding4, time_padding_mode)
    plan = _time_plan(x.shape[5], weight.shape[5], stride4[3], padding4[3], time_padding_mode)
    return _Conv4dFunction.apply(x, weight, bias, tuple(stride4[:3]), tuple(padding4[:3]), plan)


class Conv4d(torch.nn.Module):
    """True (non-separable) 4D convolution on ``[B, C, X, Y, Z, T]`` (cardiac 4D CNN paper, section 3.1).

    Built on ``conv3d`` with time folded into the batch: one call for time stride 1, one per parity for time stride
    2, and a custom first-order backward (see the module docstring; TorchScript, tracing and export take a
    plain-autograd path). The paper's layers are 3x3x3x3 with padding 1 (stride 1 or 2) and 1x1x1x1 before
    up-sampling.

    Args:
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C_out``.
        kernel_size: one int or four (X, Y, Z, T), each >= 1.
        stride: one int or four, each >= 1 (the paper uses 1 and 2).
        padding: one int or four, each >= 0: zeros in space, ``time_padding_mode`` in time.
        bias: whether to add a learnable bias.
        time_padding_mode: ``"zeros"`` (the paper's choice), ``"reflect"``, ``"replicate"`` or ``"circular"``.
        dilation: accepted for the call signature of MONAI's ``Convolution``; only 1 is supported.
        groups: accepted for the call signature of MONAI's ``Convolution``; only 1 is supported.

    Raises:
        ValueError: for channels < 1, a bad kernel size, stride, padding or time padding mode, or a dilation or
            groups other than 1.

    Input ``[B, C_in, X, Y, Z, T]``; output ``[B, C_out, X', Y', Z', T']`` with ``n' = (n + 2 p - k) // s + 1``.
    The weight is ``[C_out, C_in, kx, ky, kz, kt]``, initialised as ``torch.nn.Conv3d``'s.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        bias: bool = True,
        time_padding_mode: str = "zeros",
        *,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1; got {in_channels}, {out_channels}.")
        if _quadruple(dilation, "dilation", 1) != [1, 1, 1, 1] or groups != 1:
            raise ValueError(f"Conv4d supports dilation 1 and groups 1 only; got {dilation!r}, {groups!r}.")
        _check_mode(time_padding_mode)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _quadruple(kernel_size, "kernel_size", 1)
        self.stride = _quadruple(stride, "stride", 1)
        self.padding = _quadruple(padding, "padding", 0)
        self.time_padding_mode = time_padding_mode
        self.weight = torch.nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as ``torch.nn.Conv3d`` does (Kaiming-uniform with ``a = sqrt(5)``; bias from the fan-in)."""
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.in_channels * math.prod(self.kernel_size))
            torch.nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.kernel_size)}, "
            f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, bias={self.bias is not None}, "
            f"time_padding_mode={self.time_padding_mode!r}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x``.

        Args:
            x: ``[B, in_channels, X, Y, Z, T]``.

        Returns:
            ``[B, out_channels, X', Y', Z', T']``, contiguous, or folded (:py:func:`to_time_major`) when ``x`` is.
        """
        if torch.jit.is_scripting():
            _check_input(x, self.in_channels, self.kernel_size, self.padding, self.time_padding_mode)
            return _conv4d_plain(x, self.weight, self.bias, self.stride, self.padding, self.time_padding_mode)
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        return conv4d(x, self.weight, self.bias, self.stride, self.padding, self.time_padding_mode)


def _upsample_nearest(x: torch.Tensor, scale: list[int]) -> torch.Tensor:
    """Repeat every voxel ``scale[d]`` times along dimension ``d`` of (X, Y, Z, T) (TorchScript-compatible).

    Returns:
        ``[B, C, sx X, sy Y, sz Z, st T]``, folded (:py:func:`to_time_major`) when ``x`` is, else contiguous.

    Raises:
        ValueError: when ``x`` is not 6-D.
    """
    if x.dim() != 6:
        raise ValueError(f"4D up-sampling expects an input [B, C, X, Y, Z, T] (6-D), got shape {x.shape}.")
    b, c, nx, ny, nz, nt = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4], x.shape[5]
    if _is_folded(x):  # repeat in the [B, T, X, Y, Z, C] memory order, so the result stays folded
        m = x.permute(0, 5, 2, 3, 4, 1).reshape(b, nt, 1, nx, 1, ny, 1, nz, 1, c)
        m = m.expand(b, nt, scale[3], nx, scale[0], ny, scale[1], nz, scale[2], c)
        m = m.reshape(b, nt * scale[3], nx * scale[0], ny * scale[1], nz * scale[2], c)
        return m.permute(0, 5, 2, 3, 4, 1)
    x = x.reshape(b, c, nx, 1, ny, 1, nz, 1, nt, 1)
    x = x.expand(b, c, nx, scale[0], ny, scale[1], nz, scale[2], nt, scale[3])
    return x.reshape(b, c, nx * scale[0], ny * scale[1], nz * scale[2], nt * scale[3])


def upsample_nearest4d(x: torch.Tensor, scale_factor: int | Sequence[int] = 2) -> torch.Tensor:
    """Nearest-neighbour up-sampling of ``[B, C, X, Y, Z, T]`` by integer factors (cardiac 4D CNN paper, section 3).

    ``F.interpolate`` takes at most three spatial dimensions; this repeats each voxel instead, which is the same
    thing for integer factors: ``out[..., i, j, k, l] = x[..., i // sx, j // sy, k // sz, l // st]``.

    Args:
        x: ``[B, C, X, Y, Z, T]``.
        scale_factor: one int or four (X, Y, Z, T), each >= 1; the paper's is 2.

    Returns:
        ``[B, C, sx X, sy Y, sz Z, st T]``, folded when ``x`` is (:py:func:`to_time_major`), else contiguous.

    Raises:
        ValueError: for a bad ``scale_factor`` or an input that is not 6-D.
    """
    scale = _quadruple(scale_factor, "scale_factor", 1)
    if x.dim() != 6:
        raise ValueError(f"4D up-sampling expects an input [B, C, X, Y, Z, T] (6-D), got shape {tuple(x.shape)}.")
    return _upsample_nearest(x, scale)


class UpSample4d(torch.nn.Module):
    """Nearest-neighbour up-sampling of ``[B, C, X, Y, Z, T]``; see :py:func:`upsample_nearest4d`.

    The cardiac 4D CNN paper (section 3) up-samples with "4D nearest-neighbor interpolation after 1x1x1x1
    convolution".

    Args:
        scale_factor: one int or four (X, Y, Z, T), each >= 1; the paper's is 2.

    Raises:
        ValueError: for a bad ``scale_factor``.
    """

    def __init__(self, scale_factor: int | Sequence[int] = 2) -> None:
        super().__init__()
        self.scale_factor = _quadruple(scale_factor, "scale_factor", 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Up-sample ``x``.

        Args:
            x: ``[B, C, X, Y, Z, T]``.

        Returns:
            ``[B, C, sx X, sy Y, sz Z, st T]``.
        """
        return _upsample_nearest(x, self.scale_factor)


def group_norm4d(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Group normalization of ``[B, C, X, Y, Z, T]`` that keeps a folded input folded (cardiac 4D CNN paper, 3.1).

    The paper's blocks normalise with group normalization (its reference [14]); ``F.group_norm`` already computes it
    on any rank, statistics over the channels of a group and all of (X, Y, Z, T), but it returns a contiguous tensor,
    so a time-major network (:py:func:`to_time_major`) would pay a transpose before every Conv4d. For a folded input
    this normalises the same memory seen as a ``channels_last_3d`` tensor ``[B, C, T * X, Y, Z]`` (the same
    statistics: the group's channels and every voxel of every frame), which PyTorch's CPU kernel returns in that
    layout, i.e. folded again. Any other layout goes to ``F.group_norm`` unchanged.

    Args:
        x: ``[B, C, X, Y, Z, T]``.
        num_groups: groups, dividing ``C``.
        weight: per-channel scale ``[C]`` or None.
        bias: per-channel shift ``[C]`` or None.
        eps: added to the variance.

    Returns:
        the normalised ``x``, folded when ``x`` is (on devices whose kernel keeps ``channels_last_3d``; otherwise a
        folded copy), else as ``F.group_norm`` returns it.

    Raises:
        ValueError: when ``x`` is not 6-D.
    """
    if x.dim() != 6:
        raise ValueError(f"group_norm4d expects an input [B, C, X, Y, Z, T] (6-D), got shape {x.shape}.")
    if not _is_folded(x):
        return F.group_norm(x, num_groups, weight, bias, eps)
    b, c, nx, ny, nz, nt = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4], x.shape[5]
    v = x.permute(0, 5, 2, 3, 4, 1).reshape(b, nt * nx, ny, nz, c).permute(0, 4, 1, 2, 3)
    out = F.group_norm(v, num_groups, weight, bias, eps)
    return out.permute(0, 2, 3, 4, 1).reshape(b, nt, nx, ny, nz, c).permute(0, 5, 2, 3, 4, 1)


class GroupNorm4d(torch.nn.GroupNorm):
    """``torch.nn.GroupNorm`` for ``[B, C, X, Y, Z, T]`` that keeps a folded (time-major) input folded.

    Same parameters, state dict and results as ``torch.nn.GroupNorm``; see :py:func:`group_norm4d`.
    :py:func:`register_monai_4d` makes MONAI's ``Norm["group", 4]`` build it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x``.

        Args:
            x: ``[B, C, X, Y, Z, T]``.

        Returns:
            the normalised ``x``, in ``x``'s layout (folded or contiguous).
        """
        if torch.jit.is_scripting():
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return group_norm4d(x, self.num_groups, self.weight, self.bias, self.eps)


def to_time_major(x: torch.Tensor) -> torch.Tensor:
    """Lay ``x`` out in memory as Conv4d works inside: time-major and channels-last, ``[B, T, X, Y, Z, C]``.

    The shape and values stay those of ``[B, C, X, Y, Z, T]``; only the strides change (as ``.to(memory_format=
    torch.channels_last_3d)`` does for 5-D tensors). :py:class:`Conv4d`, :py:class:`GroupNorm4d` and
    :py:class:`UpSample4d` return a folded output for a folded input, which saves Conv4d's two transposes;
    element-wise layers and sums of two folded tensors keep the layout, ``torch.nn.GroupNorm`` does not.

    Args:
        x: ``[B, C, X, Y, Z, T]``.

    Returns:
        a tensor equal to ``x`` whose ``permute(0, 5, 2, 3, 4, 1)`` is contiguous (``x`` itself if it already is).

    Raises:
        ValueError: when ``x`` is not 6-D.
    """
    if x.dim() != 6:
        raise ValueError(f"expected [B, C, X, Y, Z, T] (6-D), got shape {x.shape}.")
    return _fold(x).permute(0, 5, 2, 3, 4, 1)


def register_monai_4d() -> None:
    """Let MONAI's layer factories build 4D layers for ``spatial_dims=4`` (idempotent).

    Replaces the factory function of ``Conv.CONV`` by one that returns :py:class:`Conv4d` for dimension 4, and that
    of ``Norm.GROUP`` by one that returns :py:class:`GroupNorm4d` for dimension 4 (``torch.nn.GroupNorm`` computes the
    same but does not keep a time-major layout); every other dimension goes to the function replaced, so 1-3D layers
    are unchanged. After it, ``monai.networks.blocks.Convolution(spatial_dims=4, ...)`` and
    ``ResidualUnit(spatial_dims=4, ...)`` build 4D convolutions (with ``norm=("group", {...})``; MONAI's instance and
    batch norms have no 4D form). Nothing is registered on import: call this before building such blocks.
    """
    from monai.networks.layers.factories import Conv, Norm  # here, not at import: the layers need no MONAI

    for factory, name, layer in ((Conv, "CONV", Conv4d), (Norm, "GROUP", GroupNorm4d)):
        original = factory.components[name].value
        if getattr(original, "conv4d_registered", False):
            continue

        def layer_factory(dim: int | None = None, _original=original, _layer=layer) -> type[torch.nn.Module]:
            return _layer if dim == 4 else _original(dim)

        functools.update_wrapper(layer_factory, original)
        layer_factory.conv4d_registered = True
        layer_factory.__doc__ = (original.__doc__ or "") + f"\nDimension 4: common.networks.conv4d.{layer.__name__}.\n"
        factory.add(name, factory.components[name].description, layer_factory)


def set_time_padding_mode(module: torch.nn.Module, mode: str) -> int:
    """Set the time padding mode of every :py:class:`Conv4d` in ``module`` (e.g. one built by MONAI blocks).

    Args:
        module: a network or layer.
        mode: one of :py:data:`TIME_PADDING_MODES`.

    Returns:
        the number of Conv4d layers changed.

    Raises:
        ValueError: for an unknown mode.
    """
    if mode not in TIME_PADDING_MODES:
        raise ValueError(f"time_padding_mode must be one of {TIME_PADDING_MODES}; got {mode!r}.")
    layers = [m for m in module.modules() if isinstance(m, Conv4d)]
    for layer in layers:
        layer.time_padding_mode = mode
    return len(layers)
