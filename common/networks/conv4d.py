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
- backward (a custom :py:class:`torch.autograd.Function`): the gradient of the stacked convolution's output is
  built once from the output gradient (the shifted sum's adjoint), then one ``convolution_backward`` call per
  ``conv3d`` gives the input and weight gradients together; only the input and the weight are saved, never the
  ``k_t``-times larger stacked output (the folded copy of the input is made again rather than kept). Plain autograd
  through the same forward allocates a full-size zero gradient per slice of the shifted sum; the custom backward
  took a third off forward+backward at the paper's first layer (``BENCHMARKS.md``, "Conv4d"). It is first-order
  only (``once_differentiable``).
- a Python loop runs over the ``k_t`` time offsets (and the padded edge frames they read), never over output frames.

Inside, activations are "folded": ``[B, T, X, Y, Z, C]`` in memory, i.e. time in the batch and ``channels_last_3d``
for ``conv3d``, which oneDNN ran about twice as fast as the default layout here (cuDNN's 3D kernels work in that
layout too). The layout of the output follows the input's, as ``channels_last`` does in PyTorch: a contiguous input
gives a contiguous output, a folded input (:py:func:`to_time_major`) a folded output, which saves the two
transposes around the layer; ``torch.nn.GroupNorm`` returns contiguous tensors, so Conv4d -> GroupNorm -> Conv4d
gains nothing from it.

Autocast: the layer casts its input, weight and bias to the autocast dtype, as autocast does for ``conv3d``, and
runs its custom backward in that dtype. ``torch.utils.checkpoint`` (re-entrant or not) works as for any layer.
Device and dtype follow the input (CPU and CUDA alike: only ``conv3d`` and its backward touch the device).

Export: :py:class:`Conv4d` and :py:class:`UpSample4d` compile with ``torch.jit.script`` (the scripted forward uses
a plain-autograd implementation: time padded explicitly, one ``conv3d`` per time-stride phase, slices and adds) and
trace with ``torch.jit.trace`` and ``torch.export.export`` (the same plain path is taken whenever
``torch.jit.is_tracing()``, ``torch.onnx.is_in_onnx_export()`` or ``torch.compiler.is_compiling()`` is true), so
the graphs hold only ``conv3d``/``convolution``, ``constant_pad_nd``/``index_select``, slicing, ``add`` and
``permute``, all of which ONNX has. ONNX export itself is not tested here (the environment has neither ``onnx`` nor
``onnxscript``).

MONAI's layer factories: :py:func:`register_monai_4d` wraps the ``Conv.CONV`` factory function so that dimension 4
gives :py:class:`Conv4d` and dimensions 1-3 go to MONAI's original function; then ``Convolution(spatial_dims=4,
...)``, ``ResidualUnit(spatial_dims=4, ...)`` and other blocks built on ``Conv[Conv.CONV, spatial_dims]`` build 4D
layers. Only the convolution is registered: group normalization (``Norm["group", 4]``, the paper's) already works
on any rank, while MONAI's instance and batch normalization, transposed convolution, pooling and ``UpSample`` have
no 4D form here (use :py:class:`UpSample4d` for the paper's nearest-neighbour up-sampling). Because ``Convolution``
does not pass a time padding mode, :py:func:`set_time_padding_mode` sets it on the layers built that way.
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
    "UpSample4d",
    "conv4d",
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


def _call_input(xm: torch.Tensor, call: _Call) -> torch.Tensor:
    """Select the input frames of one ``conv3d`` call from the folded input.

    Returns:
        ``[B * n, C, X, Y, Z]`` in ``channels_last_3d`` memory order.
    """
    if call.frame_slice is not None:
        start, stop, step = call.frame_slice
        frames = xm if (start, stop, step) == (0, xm.shape[1], 1) else xm[:, start:stop:step]
    else:
        frames = xm.index_select(1, _index(call.frames, xm.device))
    return frames.reshape(-1, *xm.shape[2:]).permute(0, 4, 1, 2, 3)


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
    xm: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    plan: _Plan,
) -> torch.Tensor:
    """Make the ``conv3d`` calls of ``plan`` on the folded input and sum their outputs with the right time shifts.

    Returns:
        the folded output ``[B, T_out, X', Y', Z', C_out]``.
    """
    batch, c_out, t_out = xm.shape[0], weight.shape[0], plan.t_out
    out = None
    for call in plan.calls:
        z = F.conv3d(_call_input(xm, call), _call_weight(weight, call), None, stride, padding)
        z = _channels_last(z).view(batch, len(call.frames), *z.shape[2:], len(call.groups), c_out)
        first = None
        if out is None:  # start from a term that covers every output frame, else from zeros
            first = next((term for term in call.terms if term.length == t_out), None)
            if first is None:
                out = z.new_zeros(batch, t_out, *z.shape[2:5], c_out)
            else:  # a copy, or z itself when it is that one term (k_t = 1): nothing else then reads z
                out = z[:, first.row0 : first.row0 + t_out, :, :, :, first.slot].contiguous()
        for term in call.terms:
            if term is first:
                continue
            if term.length:
                out[:, term.t0 : term.t0 + term.length] += z[:, term.row0 : term.row0 + term.length, ..., term.slot, :]
            if term.rest_t:
                rest = z.select(5, term.slot).index_select(1, _index(term.rest_rows, z.device))
                out.index_add_(1, _index(term.rest_t, z.device), rest)
        del z
    if out is None:  # no frame reaches any kernel offset (zero padding wider than the kernel): bias only
        sizes = zip(xm.shape[2:5], padding, weight.shape[2:5], stride, strict=True)
        out = xm.new_zeros(batch, t_out, *[(n + 2 * p - k) // s + 1 for n, p, k, s in sizes], c_out)
    if bias is not None:
        out += bias
    return out


class _Conv4dFunction(torch.autograd.Function):
    """Conv4d with the stacked-kernel forward and a backward of one ``convolution_backward`` per ``conv3d``."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, plan):
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, plan, bias is not None)
        return _unfold(_fast_forward(_fold(x), weight, bias, stride, padding, plan), x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, plan, has_bias = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        batch, c_out = x.shape[0], weight.shape[0]
        gy = _fold(grad_out)  # [B, T_out, X', Y', Z', C_out]
        xm = _fold(x)
        grad_xm = grad_w = None
        if need_x and not (len(plan.calls) == 1 and plan.calls[0].frames == tuple(range(x.shape[5]))):
            grad_xm = (torch.empty_like if plan.frames_partitioned else torch.zeros_like)(xm)
        if need_w:
            grad_w = torch.zeros_like(weight)
        for call in plan.calls:
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
                _call_input(xm, call),
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
                gx = _channels_last(gx).view(batch, n_frames, *xm.shape[2:])
                if grad_xm is None:
                    grad_xm = gx
                elif call.frame_slice is not None:
                    start, stop, step = call.frame_slice
                    target = grad_xm[:, start:stop:step]
                    target.copy_(gx) if plan.frames_partitioned else target.add_(gx)
                else:
                    index = _index(call.frames, gx.device)
                    grad_xm.index_copy_(1, index, gx) if plan.frames_partitioned else grad_xm.index_add_(1, index, gx)
            if need_w:
                gw = gw.reshape(n_groups, c_out, *weight.shape[1:5]).permute(1, 2, 3, 4, 5, 0)
                grad_w.index_copy_(5, _index(call.groups, gw.device), gw)
        grad_x = _unfold(grad_xm, x) if need_x else None
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
        ``[B, C, sx X, sy Y, sz Z, st T]``, contiguous.

    Raises:
        ValueError: when ``x`` is not 6-D.
    """
    if x.dim() != 6:
        raise ValueError(f"4D up-sampling expects an input [B, C, X, Y, Z, T] (6-D), got shape {x.shape}.")
    b, c, nx, ny, nz, nt = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4], x.shape[5]
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
        ``[B, C, sx X, sy Y, sz Z, st T]``, contiguous.

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


def to_time_major(x: torch.Tensor) -> torch.Tensor:
    """Lay ``x`` out in memory as Conv4d works inside: time-major and channels-last, ``[B, T, X, Y, Z, C]``.

    The shape and values stay those of ``[B, C, X, Y, Z, T]``; only the strides change (as ``.to(memory_format=
    torch.channels_last_3d)`` does for 5-D tensors). :py:class:`Conv4d` returns a folded output for a folded input,
    which saves its two transposes; element-wise layers keep the layout, ``torch.nn.GroupNorm`` does not.

    Args:
        x: ``[B, C, X, Y, Z, T]``.

    Returns:
        a tensor equal to ``x`` whose ``permute(0, 5, 2, 3, 4, 1)`` is contiguous (``x`` itself if it already is).

    Raises:
        ValueError: when ``x`` is not 6-D.
    """
    if x.dim() != 6:
        raise ValueError(f"expected [B, C, X, Y, Z, T] (6-D), got shape {tuple(x.shape)}.")
    return _fold(x).permute(0, 5, 2, 3, 4, 1)


def register_monai_4d() -> None:
    """Let MONAI's ``Conv`` layer factory build :py:class:`Conv4d` for ``spatial_dims=4`` (idempotent).

    Replaces the factory function of ``Conv.CONV`` by one that returns :py:class:`Conv4d` for dimension 4 and calls
    the function it replaces for every other dimension, so 1-3D layers are unchanged. After it,
    ``monai.networks.blocks.Convolution(spatial_dims=4, ...)`` and ``ResidualUnit(spatial_dims=4, ...)`` build
    4D convolutions (with ``norm=("group", {...})``; MONAI's instance and batch norms have no 4D form). Nothing is
    registered on import: call this before building such blocks.
    """
    from monai.networks.layers.factories import Conv  # here, not at import: the layer itself needs no MONAI

    original = Conv.components["CONV"].value
    if getattr(original, "conv4d_registered", False):
        return

    @functools.wraps(original)
    def conv_factory(dim: int) -> type[torch.nn.Module]:
        return Conv4d if dim == 4 else original(dim)

    conv_factory.conv4d_registered = True
    conv_factory.__doc__ = (original.__doc__ or "") + "\nDimension 4: common.networks.conv4d.Conv4d.\n"
    Conv.add("CONV", Conv.components["CONV"].description, conv_factory)


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
