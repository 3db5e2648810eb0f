"""Speed and memory benchmarks, measured side by side in one run (machines here are noisy: compare ratios).

    python scripts/benchmark.py                 # every section; prints Markdown tables
    python scripts/benchmark.py --out BENCHMARKS.md
    python scripts/benchmark.py --only conv4d --threads 1 --out BENCHMARKS.md   # one section, written in place
    python scripts/benchmark.py --only cardiac --quick --repeats 1                # a fast check of one section

    python scripts/benchmark.py --only bundles --bundle all --out BENCHMARKS.md     # every bundle (issue 14)
    python scripts/benchmark.py --only bundles --bundle hand_mri_bone_segmentation --device cuda

Sections (``--only bundles``, ``--only abdominal``, ``--only conv4d`` or ``--only cardiac``; by default all four, in
that order):

bundles, for each bundle of ``bundles/`` (``--bundle NAME|all``; see ``scripts/bundle_benchmark.py``): the network
at the paper's training input (forward and forward+backward time, multiply-adds, multiply-adds per second, peak
memory, and the same for a MONAI ``BasicUNet`` of the same parameter count), the real training loop of the bundle's
demo against the bare network step on the same batch, and whole-volume inference at the paper's volume size against
the network compute its windows need, and at twice that volume. One Markdown section per bundle.

abdominal, for bundles/abdominal_ct_multiorgan_segmentation:
- one training iteration (forward, Dice loss, backward, Adam step) at the paper's settings (19M parameters,
  batch 3 of 64^3) and at the demo's (features 8-64, batch 3 of 32^3);
- inference of one CT volume at the paper's resolution (128 x 128 x 80 voxels of 3 mm) with the paper's scheme
  (the network reshaped to the whole xy plane, tiles overlapping along z) against MONAI's usual 64^3 sliding
  window with the same overlap: the paper says reshaping makes inference more efficient (Section II.A);
- the B-spline + rigid augmentation of one 64^3 sample, and the phantom generator for one case.

conv4d, for common/networks/conv4d.py at the cardiac 4D CNN's layer shapes (paper section 3 and Table 1: 8, 16
and 32 channels at 96x96x64x16, 48x48x32x8 and 24x24x16x4, 3x3x3x3 kernels, padding 1, and the two stride-2
down-samplings): forward and forward+backward time and peak memory of ``Conv4d`` against a per-frame loop of
``conv3d`` calls and against one ``conv3d`` doing the same multiply-adds. Each layer shape is timed in its own
subprocess (methods interleaved, best of ``--repeats`` after one warm-up), and each (shape, method, pass)'s peak
memory in another (CPU: growth of the peak resident set, ``ru_maxrss``; CUDA: ``max_memory_allocated``). The
subprocesses run with ``MALLOC_MMAP_MAX_=0`` (glibc returning large buffers to the system made CPU timings 2-3x
slower and erratic, issue 9) and a 64 GiB ``MALLOC_TRIM_THRESHOLD_`` (without it glibc still trims the heap top
and the calls fault their buffers in again: twice the page faults here) and ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP
threads spinning on a shared, oversubscribed CPU made single weight-gradient calls 10-30x slower at random) unless
those are set already; the parent process and the abdominal section keep the caller's environment.

cardiac, for bundles/cardiac_ccta_4d_segmentation (issue 10, "Memory": a training step at the paper's size must fit
its 16 GB GPU): the peak memory and the time of one training step (forward, ``SparseTemporalDiceLoss``, backward,
Adam step) of the network, loss and optimizer that the bundle's train.json builds, batch 1 at its ``patch_size``
(1 x 1 x 96 x 96 x 64 x 16) on a synthetic LV-like crop with 4 annotated frames of 16 (the others 255), with
``activation_checkpointing`` off and on, and of the 3D baseline (``variants/baseline_3d.json``, one 96 x 96 x 64
frame). Each case's memory is measured on the first full-size step of its own subprocess (CPU: growth of
``ru_maxrss`` plus the batch, parameters and Adam's state; CUDA: ``max_memory_allocated``) in the caller's
environment, as a training run has it; its step time (median of ``--repeats`` after one warm-up) in another, with
the conv4d section's allocator settings. A memory worker above 18 GiB resident is stopped and its case reported as
not fitting the machine. ``--quick`` halves every axis (48 x 48 x 32 x 8).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle_benchmark import _gib, _peak_rss  # noqa: E402  (scripts/ is on sys.path: this script's folder)

from common.networks.conv4d import (  # noqa: E402
    GroupNorm4d,
    _call_input,
    _conv4d_plain,
    _fast_forward,
    _fold,
    _time_plan,
    _unfold,
    conv4d,
)

CONFIGS = ROOT / "bundles" / "abdominal_ct_multiorgan_segmentation" / "configs"
SECTIONS = ("bundles", "abdominal", "conv4d", "cardiac")


def _time(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


def _parser(*overlays: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), *(str(CONFIGS / o) for o in overlays)])
    return parser


def _train_step(parser, patch: int, batch: int):
    net = parser.get_parsed_content("network_def")
    loss = parser.get_parsed_content("loss")
    opt = torch.optim.Adam(net.parameters(), lr=parser["learning_rate"])
    x = torch.rand(batch, 1, patch, patch, patch)
    y = torch.randint(0, parser["num_classes"], (batch, 1, patch, patch, patch))

    def step():
        opt.zero_grad()
        loss(net(x), y).backward()
        opt.step()

    return step


def _abdominal_section(repeats: int) -> str:
    """Time the paper's and the demo's training step and the two inference tilings side by side.

    Returns:
        the section's Markdown (without its heading).
    """
    from monai.inferers import SlidingWindowInferer

    from common.phantoms.abdominal_ct import generate_abdominal_ct
    from common.transforms.augmentation import RandBSplineAffined

    rows = []
    paper, demo = _parser(), _parser("demo.json")

    med, best = _time(_train_step(paper, 64, 3), repeats)
    rows.append(("train iteration, paper (19.07M params, batch 3 x 64^3)", med, best))
    paper_iter = med
    med, best = _time(_train_step(demo, 32, 3), repeats)
    rows.append(("train iteration, demo (1.19M params, batch 3 x 32^3)", med, best))
    demo_iter = med

    net = paper.get_parsed_content("network_def").eval()
    volume = torch.rand(1, 1, 128, 128, 80)
    reshaped = SlidingWindowInferer(roi_size=[-1, -1, 64], overlap=[0.0, 0.0, 0.5], mode="constant")
    cubes = SlidingWindowInferer(roi_size=[64, 64, 64], overlap=0.5, mode="constant")
    with torch.no_grad():
        med, best = _time(lambda: reshaped(volume, net), repeats)
        rows.append(("inference 128x128x80, whole-xy tiles along z (paper)", med, best))
        reshaped_t = med
        med, best = _time(lambda: cubes(volume, net), repeats)
        rows.append(("inference 128x128x80, 64^3 cubes, overlap 0.5", med, best))
        cubes_t = med

    aug = RandBSplineAffined(
        ["image", "label"],
        spatial_size=(64, 64, 64),
        random_center=True,
        rotate_range=[0.349] * 3,
        translate_range=[20] * 3,
        mode=("bilinear", "nearest"),
    )
    aug.set_random_state(0)
    sample = {"image": torch.rand(1, 128, 128, 80), "label": torch.randint(0, 8, (1, 128, 128, 80)).float()}
    med, best = _time(lambda: aug(sample), max(repeats, 10))
    rows.append(("augmentation, one 64^3 sample from a 128x128x80 volume", med, best))
    rng = np.random.default_rng(0)
    med, best = _time(lambda: generate_abdominal_ct(rng), repeats)
    rows.append(("phantom abdominal CT, 256x256x120 at 1.5x1.5x2 mm", med, best))

    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; median and best of {repeats} runs after one warm-up.",
        "",
        "| what | median (s) | best (s) |",
        "|---|---|---|",
        *[f"| {name} | {med:.3f} | {best:.3f} |" for name, med, best in rows],
        "",
        f"- paper / demo training iteration: {paper_iter / demo_iter:.1f}x",
        f"- 64^3 cubes / whole-xy tiles at inference: {cubes_t / reshaped_t:.2f}x",
        f"- 50,000 paper iterations on this CPU: {paper_iter * 50000 / 86400:.1f} days",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# conv4d
# ----------------------------------------------------------------------------------------------------------------

#: (name, C_in, C_out, (X, Y, Z, T), stride): the cardiac 4D CNN's 3x3x3x3 layers (paper section 3, Table 1)
CONV4D_CASES = (
    ("level 0, 8 -> 8 ch, 96x96x64x16", 8, 8, (96, 96, 64, 16), 1),
    ("level 1, 16 -> 16 ch, 48x48x32x8", 16, 16, (48, 48, 32, 8), 1),
    ("level 2, 32 -> 32 ch, 24x24x16x4", 32, 32, (24, 24, 16, 4), 1),
    ("down 0 -> 1, 8 -> 16 ch, 96x96x64x16, stride 2", 8, 16, (96, 96, 64, 16), 2),
    ("down 1 -> 2, 16 -> 32 ch, 48x48x32x8, stride 2", 16, 32, (48, 48, 32, 8), 2),
)
#: method -> what the table calls it
CONV4D_METHODS = {
    "conv4d": "Conv4d",
    "conv4d_time_major": "Conv4d, time-major in and out (`to_time_major`)",
    "conv4d_autograd": "Conv4d forward, plain autograd backward (ablation)",
    "conv4d_plain": "Conv4d plain path (TorchScript / export)",
    "loop": "per-frame loop of conv3d",
    "conv3d": "one conv3d, equal multiply-adds",
    "conv3d_cl": "one conv3d, equal multiply-adds, channels_last_3d",
}
#: one residual block of the paper (GroupNorm, ReLU, Conv4d, twice, plus the identity), activations contiguous or
#: time-major: whether keeping the network time-major pays once group normalization is in the way
CONV4D_BLOCK_METHODS = {
    "block": "residual block, contiguous activations",
    "block_time_major": "residual block, time-major activations (`to_time_major`, `GroupNorm4d`)",
}
#: the plain path and the plain-autograd ablation only where they fit in memory beside the rest (levels 1 and 2)
_ABLATIONS = ("conv4d_autograd", "conv4d_plain")
_WORKER_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**36), "OMP_WAIT_POLICY": "PASSIVE"}


def _per_frame_loop(x, weight, bias, stride: int):
    """The usual public Conv4d: for each output frame, a sum of ``k_t`` ``conv3d`` calls (zero time padding 1).

    Returns:
        ``[B, C_out, X', Y', Z', T']``.
    """
    xp = F.pad(x, (1, 1))
    frames = []
    for t in range((x.shape[5] - 1) // stride + 1):
        y = F.conv3d(xp[..., stride * t], weight[..., 0], bias, stride, 1)
        for g in range(1, weight.shape[5]):
            y = y + F.conv3d(xp[..., stride * t + g], weight[..., g], None, stride, 1)
        frames.append(y)
    return torch.stack(frames, dim=-1)


def _conv4d_problem(c_in: int, c_out: int, size, stride: int, method: str, device: str):
    """Inputs and the call to time for one method; the conv3d baselines get their own equal-MAC inputs.

    Returns:
        ``(fn, params)``: the forward as a function of nothing, and the leaf tensors that receive gradients.
    """
    gen = torch.Generator().manual_seed(0)
    nx, ny, nz, nt = size
    if method.startswith("block"):
        return _block_problem(c_in, size, method, device, gen)
    # inputs are drawn in their final layout: a converted copy would leave the original's freed memory in the heap
    # for the layer to reuse, and the peak-RSS measurement would miss that much
    if method.startswith("conv3d"):  # [B * T', 3 C_in, X, Y, Z] -> C_out: the multiply-adds of the 4D layer
        shape = ((nt - 1) // stride + 1, 3 * c_in, nx, ny, nz)
        fmt = torch.channels_last_3d if method == "conv3d_cl" else torch.contiguous_format
        x = torch.empty(shape, memory_format=fmt).normal_(generator=gen)
        w = torch.randn(c_out, 3 * c_in, 3, 3, 3, generator=gen).div_(math.sqrt(81 * c_in)).to(memory_format=fmt)
    else:
        if method == "conv4d_time_major":  # [B, T, X, Y, Z, C] in memory, see to_time_major
            x = torch.empty(1, nt, nx, ny, nz, c_in).normal_(generator=gen).permute(0, 5, 2, 3, 4, 1)
        else:
            x = torch.randn(1, c_in, nx, ny, nz, nt, generator=gen)
        w = torch.randn(c_out, c_in, 3, 3, 3, 3, generator=gen).div_(math.sqrt(81 * c_in))
    x, w, b = (t.to(device).requires_grad_() for t in (x, w, torch.zeros(c_out)))
    plan, s3 = _time_plan(nt, 3, stride, 1, "zeros"), (stride,) * 3
    calls = {
        "conv4d": lambda: conv4d(x, w, b, stride, 1),
        "conv4d_time_major": lambda: conv4d(x, w, b, stride, 1),
        "conv4d_autograd": lambda: _unfold(
            _fast_forward([_call_input(_fold(x), c) for c in plan.calls], w, b, s3, (1, 1, 1), plan, 1, size[:3]), x
        ),
        "conv4d_plain": lambda: _conv4d_plain(x, w, b, [stride] * 4, [1] * 4, "zeros"),
        "loop": lambda: _per_frame_loop(x, w, b, stride),
        "conv3d": lambda: F.conv3d(x, w, b, stride, 1),
        "conv3d_cl": lambda: F.conv3d(x, w, b, stride, 1),
    }
    return calls[method], (x, w, b)


def _block_problem(channels: int, size, method: str, device: str, gen: torch.Generator):
    """One of the paper's residual blocks (section 3.1) on contiguous or time-major activations.

    Returns:
        ``(fn, params)`` as :py:func:`_conv4d_problem`.
    """
    nx, ny, nz, nt = size
    if method == "block_time_major":
        x = torch.empty(1, nt, nx, ny, nz, channels).normal_(generator=gen).permute(0, 5, 2, 3, 4, 1)
    else:
        x = torch.randn(1, channels, nx, ny, nz, nt, generator=gen)
    ws = [torch.randn(channels, channels, 3, 3, 3, 3, generator=gen).div_(math.sqrt(81 * channels)) for _ in "ab"]
    norms = [GroupNorm4d(min(4, channels), channels).to(device) for _ in "ab"]
    x, *ws = (t.to(device).requires_grad_() for t in (x, *ws))

    def block():
        h = x
        for w, norm in zip(ws, norms, strict=True):
            h = conv4d(F.relu(norm(h)), w, None, 1, 1)
        return x + h

    return block, (x, *ws, *(p for n in norms for p in n.parameters()))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _run_once(fn, params, backward: bool, device: str) -> float:
    for p in params:
        p.grad = None
    _sync(device)
    start = time.perf_counter()
    if backward:
        y = fn()
        y.backward(torch.ones_like(y))
    else:
        with torch.no_grad():
            fn()
    _sync(device)
    return time.perf_counter() - start


def _peak_bytes(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else _peak_rss()


def _conv4d_worker(spec_json: str) -> None:
    """Subprocess body: time all methods at one layer shape, or measure one method's peak memory; print JSON."""
    spec = json.loads(spec_json)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device, (c_in, c_out, size, stride) = spec["device"], spec["case"]
    if spec["task"] == "memory":  # one measurement per process: the CPU's peak resident set only grows
        fn, params = _conv4d_problem(c_in, c_out, size, stride, spec["method"], device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.startswith("cuda") else _peak_bytes(device)
        _run_once(fn, params, spec["backward"], device)
        print(json.dumps(_peak_bytes(device) - base))
        return
    problems = {m: _conv4d_problem(c_in, c_out, size, stride, m, device) for m in spec["methods"]}
    times = {m: {"fwd": [], "fb": []} for m in problems}
    for key, backward in (("fwd", False), ("fb", True)):
        for fn, params in problems.values():  # warm-up: oneDNN / cuDNN pick and cache their kernels
            _run_once(fn, params, backward, device)
        for _ in range(spec["repeats"]):
            for m, (fn, params) in problems.items():
                times[m][key].append(_run_once(fn, params, backward, device))
    print(json.dumps(times))


class _WorkerOutOfMemory(RuntimeError):
    """A benchmark worker went over its resident-memory limit (stopped here) or was killed (SIGKILL: OOM killer).

    Args:
        message: what happened.
        limit: the limit the worker passed, or None where something else killed it.
    """

    def __init__(self, message: str, limit: int | None = None) -> None:
        super().__init__(message)
        self.limit = limit


def _rss_bytes(pid: int) -> int:
    """Current resident set of process ``pid`` (Linux ``/proc``; 0 where it cannot be read).

    Returns:
        bytes.
    """
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _run_worker(
    spec: dict, env: dict, worker: str = "_conv4d_worker", rss_limit: int | None = None, module: str = "benchmark"
) -> dict:
    """Run ``<module>.<worker>(json.dumps(spec))`` in a fresh Python subprocess and parse the JSON it prints last.

    Args:
        spec: the worker's arguments.
        env: the subprocess's environment.
        worker: name of the worker function in this module.
        rss_limit: stop the subprocess once its resident set passes this many bytes (polled every 0.2 s), so that
            a measurement too large for the machine fails alone instead of bringing the OOM killer onto others.
        module: the module of ``scripts/`` that holds the worker.

    Returns:
        the worker's result.

    Raises:
        _WorkerOutOfMemory: the subprocess passed ``rss_limit`` or was killed by SIGKILL (the OOM killer).
        RuntimeError: the subprocess failed otherwise.
    """
    scripts = str(ROOT / "scripts")
    # After the worker has printed its result, leave without the interpreter's teardown: a training loop stopped
    # mid-epoch can abort there ("terminate called without an active exception", its loader's workers; seen once in
    # four paper-configuration runs), which would fail a finished measurement.
    code = (
        f"import os, sys; sys.path.insert(0, {scripts!r}); import {module}; {module}.{worker}(sys.argv[1]); "
        "sys.stdout.flush(); sys.stderr.flush(); os._exit(0)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(spec)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_rss, stopped = 0, False
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:  # retrying communicate loses no output
            peak_rss = max(peak_rss, _rss_bytes(proc.pid))
            if rss_limit is not None and peak_rss > rss_limit and not stopped:
                proc.kill()
                stopped = True
    if stopped or proc.returncode == -signal.SIGKILL:
        why = f"stopped above {rss_limit / 2**30:.1f} GiB resident" if stopped else "killed (SIGKILL)"
        raise _WorkerOutOfMemory(f"{why}; {peak_rss / 2**30:.1f} GiB when last seen", rss_limit if stopped else None)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker {worker} failed ({spec}):\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _machine(device: str, threads: int | None) -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    facts = [
        f"{cpu}, {os.cpu_count()} logical CPUs",
        f"{threads or torch.get_num_threads()} torch threads",
        f"torch {torch.__version__} (oneDNN {torch.backends.mkldnn.is_available() and 'on' or 'off'})",
    ]
    if device.startswith("cuda"):
        facts.insert(0, f"{torch.cuda.get_device_name(device)} (cuDNN {torch.backends.cudnn.version()})")
    return ", ".join(facts)


def _conv4d_section(repeats: int, threads: int | None, device: str, quick: bool) -> str:
    """Time Conv4d against a per-frame loop and an equal-MAC conv3d at the cardiac network's layer shapes.

    Returns:
        the section's Markdown (without its heading).
    """
    env = {**os.environ, **{k: v for k, v in _WORKER_ENV.items() if k not in os.environ}}
    load_start = os.getloadavg()
    rows, notes, block_rows = [], [], []
    for name, c_in, c_out, size, stride in CONV4D_CASES:
        if quick:  # a smoke run of the script: space / 4
            size = (size[0] // 4, size[1] // 4, size[2] // 4, size[3])
            name = f"{name} (quick: {size[0]}x{size[1]}x{size[2]}x{size[3]})"
        methods = [m for m in CONV4D_METHODS if m not in _ABLATIONS or (stride == 1 and size[0] <= 48)]
        case = [c_in, c_out, list(size), stride]
        common = {"case": case, "threads": threads, "device": device}
        times = _run_worker({"task": "time", "methods": methods, "repeats": repeats, **common}, env)
        memory = {
            m: {
                k: _run_worker({"task": "memory", "method": m, "backward": k == "fb", **common}, env)
                for k in ("fwd", "fb")
            }
            for m in methods
        }
        best = {m: {k: min(v) for k, v in times[m].items()} for m in methods}
        for m in methods:
            fwd, fb = times[m]["fwd"], times[m]["fb"]
            rows.append(
                f"| {name} | {CONV4D_METHODS[m]} | {min(fwd):.3f} / {statistics.median(fwd):.3f} | "
                f"{min(fb):.3f} / {statistics.median(fb):.3f} | {best[m]['fwd'] / best['conv3d']['fwd']:.2f} | "
                f"{best[m]['fb'] / best['conv3d']['fb']:.2f} | {memory[m]['fwd'] / 2**20:.0f} | "
                f"{memory[m]['fb'] / 2**20:.0f} |"
            )
        c4, c3, cl, loop = best["conv4d"], best["conv3d"], best["conv3d_cl"], best["loop"]
        notes.append(
            f"- {name}: Conv4d forward+backward {c4['fb'] / c3['fb']:.2f}x one conv3d (target <= 1.0: "
            f"{'met' if c4['fb'] <= c3['fb'] else 'missed'}), {c4['fb'] / cl['fb']:.2f}x the channels-last conv3d; "
            f"per-frame loop / Conv4d {loop['fb'] / c4['fb']:.1f}x forward+backward, {loop['fwd'] / c4['fwd']:.1f}x "
            f"forward (target >= 4: {'met' if loop['fb'] >= 4 * c4['fb'] else 'missed'})"
        )
        if "conv4d_time_major" in best:
            notes[-1] += f"; time-major in and out {best['conv4d_time_major']['fb'] / c3['fb']:.2f}x conv3d"
        if "conv4d_autograd" in best:
            notes[-1] += (
                f"; the custom backward saves {1 - c4['fb'] / best['conv4d_autograd']['fb']:.0%} of "
                "forward+backward against plain autograd through the same forward"
            )
        if stride == 1:
            spec = {"task": "time", "methods": list(CONV4D_BLOCK_METHODS), "repeats": repeats, **common}
            block = _run_worker(spec, env)
            bb = {m: min(v["fb"]) for m, v in block.items()}
            for m in CONV4D_BLOCK_METHODS:
                fb = block[m]["fb"]
                block_rows.append(
                    f"| {name} | {CONV4D_BLOCK_METHODS[m]} | {min(fb):.3f} / {statistics.median(fb):.3f} | "
                    f"{bb[m] / bb['block']:.2f} |"
                )
        print(f"conv4d benchmark: {name} done", file=sys.stderr)
    load_end = os.getloadavg()
    memory_how = (
        "`torch.cuda.max_memory_allocated` above what the inputs hold"
        if device.startswith("cuda")
        else "growth of the process's peak resident set (`ru_maxrss`) over the inputs, one subprocess per "
        "(shape, method, forward or forward+backward)"
    )
    env_note = ", ".join(f"{k}={env[k]}" for k in _WORKER_ENV)
    return "\n".join(
        [
            f"Machine: {_machine(device, threads)}; device {device}; load average "
            f"{load_start[0]:.1f} at the start and {load_end[0]:.1f} at the end (1 min). Times are best / median "
            f"of {repeats} runs after one warm-up, all methods of a shape interleaved in one subprocess "
            f"({env_note}); batch 1, 3x3x3x3 kernels, padding 1 (zeros), float32. Peak memory: {memory_how}. "
            '"one conv3d, equal multiply-adds" convolves `[T\', 3 C_in, X, Y, Z]` to `C_out` channels with a '
            "3x3x3 kernel: the multiply-adds of the 4D layer in one call (its input is the time-unfolded "
            "4D input).",
            "",
            "| layer | method | forward (s) | forward+backward (s) | forward / conv3d | forward+backward / conv3d | "
            "peak forward (MiB) | peak forward+backward (MiB) |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            *notes,
            "",
            "One residual block of the paper (section 3.1: GroupNorm, ReLU, 3x3x3x3 Conv4d, twice, plus the "
            "identity; 4 groups), forward+backward, timed the same way in its own subprocess per level:",
            "",
            "| level | activations | forward+backward (s), best / median | / contiguous |",
            "|---|---|---|---|",
            *block_rows,
        ]
    )


# ----------------------------------------------------------------------------------------------------------------
# cardiac
# ----------------------------------------------------------------------------------------------------------------

CARDIAC_CONFIGS = ROOT / "bundles" / "cardiac_ccta_4d_segmentation" / "configs"
#: key -> (what the table calls it, overlays on train.json, activation_checkpointing)
CARDIAC_CASES = {
    "off": ("4D network, activation checkpointing off (`activation_checkpointing: false`, the default)", (), False),
    "on": ("4D network, activation checkpointing on (`activation_checkpointing: true`)", (), True),
    "3d": ("3D baseline (`variants/baseline_3d.json`), one frame", ("variants/baseline_3d.json",), False),
}
#: short names of the cases for the notes
_CARDIAC_SHORT = {"off": "4D, checkpointing off", "on": "4D, checkpointing on", "3d": "3D baseline"}
#: a memory worker is stopped above this resident set (the machines here have 23 GiB, shared with other work)
CARDIAC_RSS_LIMIT = 18 * 2**30
#: the paper's GPU (16 GB) and issue 10's goal for a step with activation checkpointing
CARDIAC_GPU_BYTES, CARDIAC_GOAL_BYTES = 16 * 2**30, 8 * 2**30
#: annotated frames of a synthetic 4D crop (the rest hold ``ignore_value``)
CARDIAC_ANNOTATED = 4


def _cardiac_parser(overlays, checkpointing: bool, device: str):
    """The cardiac bundle's train.json (plus overlays) with ``activation_checkpointing`` and ``device`` set.

    Returns:
        a ``monai.bundle.ConfigParser``.
    """
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CARDIAC_CONFIGS / "train.json"), *(str(CARDIAC_CONFIGS / o) for o in overlays)])
    parser["activation_checkpointing"] = bool(checkpointing)
    parser["device"] = f"$torch.device({device!r})"
    return parser


def _cardiac_batch(patch, ignore_value: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic CT crop and its sparse label at the bundle's patch size: an LV-like ball that contracts in time.

    The LV cavity (label 1) is a ball around a randomly shifted centre whose radius shrinks by up to 30 % over the
    sequence, the myocardium (label 2) a shell around it; the image is their intensities plus Gaussian noise. In
    4D, ``CARDIAC_ANNOTATED`` frames drawn at random keep their labels and the others hold ``ignore_value``; in 3D
    the one frame is annotated.

    Args:
        patch: ``[X, Y, Z, T]`` (4D) or ``[X, Y, Z]`` (3D).
        ignore_value: label value of the unannotated frames.
        seed: seed of the draws.

    Returns:
        ``(image, label)``: float32 ``[1, 1, *patch]`` and uint8 ``[1, 1, *patch]`` (the bundle's dtypes).
    """
    rng = np.random.default_rng(seed)
    nx, ny, nz = patch[:3]
    nt = patch[3] if len(patch) == 4 else 1
    annotated = set(rng.choice(nt, size=min(CARDIAC_ANNOTATED, nt), replace=False).tolist()) if nt > 1 else {0}
    centre = np.array([nx, ny, nz]) / 2 + rng.uniform(-0.1, 0.1, 3) * nz
    gx, gy, gz = np.ogrid[:nx, :ny, :nz]
    distance = np.sqrt((gx - centre[0]) ** 2 + (gy - centre[1]) ** 2 + (gz - centre[2]) ** 2)
    image = np.empty((nx, ny, nz, nt), np.float32)
    label = np.full((nx, ny, nz, nt), ignore_value, np.uint8)
    for t in range(nt):
        inner = 0.2 * nz * (1.0 - 0.3 * np.sin(np.pi * t / nt) ** 2)
        frame = np.where(distance <= inner, 1, np.where(distance <= inner + 0.12 * nz, 2, 0)).astype(np.uint8)
        image[..., t] = np.choose(frame, [-0.6, 0.5, 0.1]) + rng.normal(0.0, 0.1, frame.shape)
        if t in annotated:
            label[..., t] = frame
    if len(patch) == 3:
        image, label = np.ascontiguousarray(image[..., 0]), np.ascontiguousarray(label[..., 0])
    return torch.from_numpy(image)[None, None], torch.from_numpy(label)[None, None]


def _cardiac_patch(parser, quick: bool) -> list[int]:
    patch = list(parser["patch_size"])
    return [n // 2 for n in patch] if quick else patch


def _cardiac_worker(spec_json: str) -> None:
    """Subprocess body: one training step's peak memory, or the step's times; print JSON.

    The network, loss and optimizer are the bundle's (``network``, ``loss``, ``optimizer`` of train.json and the
    overlays), the batch one synthetic crop of the bundle's ``patch_size`` (:py:func:`_cardiac_batch`). A step is
    ``zero_grad``, forward, loss, backward, ``optimizer.step()``, under autocast with a gradient scaler where the
    bundle's ``amp`` is on (CUDA), as ``SupervisedTrainer`` runs it. A first step on an 8 x 8 x 8 (x 4) crop loads
    what the libraries load on first use and builds Adam's state. Memory is then measured on the first step at full
    size (the CPU's peak resident set only grows): its peak above what the process held once the model, the
    optimizer and the batch were built, plus the bytes of the batch, the parameters and Adam's state.

    Raises:
        FloatingPointError: the first step's loss is not finite.
    """
    spec = json.loads(spec_json)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = spec["device"]
    parser = _cardiac_parser(spec["overlays"], spec["checkpointing"], device)
    net = parser.get_parsed_content("network")
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    amp = bool(parser.get_parsed_content("amp"))
    scaler = torch.amp.GradScaler("cuda") if amp else None
    net.train()

    def step(image: torch.Tensor, label: torch.Tensor, saved: dict | None = None) -> float:
        optimizer.zero_grad(set_to_none=True)

        def pack(t: torch.Tensor) -> torch.Tensor:  # counts what autograd keeps for the backward, copies nothing
            if saved is not None:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with (
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
            torch.autocast(torch.device(device).type, enabled=amp),
        ):
            loss = loss_fn(net(image), label)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        _sync(device)
        return float(loss)

    # a step on the smallest crop the network takes: libraries load and start their threads, Adam builds its state
    patch = _cardiac_patch(parser, spec["quick"])
    step(*(t.to(device) for t in _cardiac_batch([8, 8, 8, 4][: len(patch)], parser["ignore_value"])))
    optimizer.zero_grad(set_to_none=True)
    image, label = (t.to(device) for t in _cardiac_batch(patch, parser["ignore_value"]))
    if spec["task"] == "memory":
        state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        held = sum(t.nbytes for t in (image, label, *net.parameters(), *state))
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.startswith("cuda") else _peak_bytes(device)
        saved: dict[int, int] = {}
        loss = step(image, label, saved)
        if not math.isfinite(loss):
            raise FloatingPointError(f"cardiac benchmark: the first step's loss is {loss}.")
        result = {
            "peak": _peak_bytes(device) - base + held,
            "held": held,
            "saved": sum(saved.values()),
            "params": sum(p.numel() for p in net.parameters()),
            "loss": loss,
        }
        print(json.dumps(result))
        return
    step(image, label)  # warm-up at full size: oneDNN / cuDNN pick their kernels for these shapes
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        step(image, label)
        times.append(time.perf_counter() - start)
    print(json.dumps(times))


def _cardiac_section(repeats: int, threads: int | None, device: str, quick: bool) -> str:
    """Peak memory and time of one training step of the cardiac bundle: 4D without and with checkpointing, 3D.

    Each case's memory is measured in a fresh subprocess with the caller's environment (as a training run has it),
    and its step time in another with the conv4d section's allocator settings (``_WORKER_ENV``); a memory worker
    that passes ``CARDIAC_RSS_LIMIT`` on the CPU is stopped and its case reported as not fitting this machine.

    Returns:
        the section's Markdown (without its heading).
    """
    time_env = {**os.environ, **{k: v for k, v in _WORKER_ENV.items() if k not in os.environ}}
    memory_env = dict(os.environ)
    rss_limit = None if device.startswith("cuda") else CARDIAC_RSS_LIMIT
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    load_start = os.getloadavg()
    results, rows = {}, []
    for key, (name, overlays, checkpointing) in CARDIAC_CASES.items():
        spec = {
            "overlays": list(overlays),
            "checkpointing": checkpointing,
            "quick": quick,
            "threads": threads,
            "device": device,
            "repeats": repeats,
        }
        patch = _cardiac_patch(_cardiac_parser(overlays, checkpointing, device), quick)
        size = "x".join(map(str, patch))
        result = {"name": name, "size": size, "memory": None, "times": None, "failure": "", "stopped": None}
        try:
            result["memory"] = _run_worker({"task": "memory", **spec}, memory_env, "_cardiac_worker", rss_limit)
        except _WorkerOutOfMemory as error:
            result["failure"] = f"did not fit in this machine's {ram / 2**30:.1f} GiB ({error})"
            result["stopped"] = error.limit
        if result["memory"]:
            try:
                result["times"] = _run_worker({"task": "time", **spec}, time_env, "_cardiac_worker", rss_limit)
            except _WorkerOutOfMemory as error:
                result["failure"] = f"not timed: the timing worker ran out of memory ({error})"
        results[key] = result
        mem, times = result["memory"], result["times"]
        rows.append(
            f"| {name} | 1 x 1 x {size.replace('x', ' x ')} | "
            + (f"{mem['params'] / 1e6:.3f}M | {_gib(mem['peak'])} | {_gib(mem['saved'])} | " if mem else "- | - | - | ")
            + (f"{statistics.median(times):.2f} / {min(times):.2f} |" if times else f"{result['failure']} |")
        )
        print(f"cardiac benchmark: {name} done", file=sys.stderr)
    load_end = os.getloadavg()

    def peak(key: str) -> float | None:
        return results[key]["memory"]["peak"] if results[key]["memory"] else None

    def verdict(key: str, limit: int) -> str:
        if peak(key) is None:  # a worker stopped above the limit needed more than that: a "no" for any smaller GPU
            stopped = results[key]["stopped"]
            return f"{'no' if stopped and stopped >= limit else 'unknown'}, {results[key]['failure']}"
        return f"{_gib(peak(key))} GiB, {'yes' if peak(key) <= limit else 'no'}"

    notes = [
        "- fits the paper's 16 GB GPU (16 GiB): "
        + "; ".join(f"{what}: {verdict(key, CARDIAC_GPU_BYTES)}" for key, what in _CARDIAC_SHORT.items()),
        f"- issue 10's goal, under 8 GiB with activation checkpointing on: {verdict('on', CARDIAC_GOAL_BYTES)}",
    ]
    if peak("off") and peak("on"):
        slower = ""
        if results["off"]["times"] and results["on"]["times"]:
            t_off, t_on = (statistics.median(results[k]["times"]) for k in ("off", "on"))
            slower = f" for {t_on / t_off:.2f}x the step time"
        notes.append(
            f"- activation checkpointing saves {1 - peak('on') / peak('off'):.0%} of the step's memory (on / off "
            f"{peak('on') / peak('off'):.2f}; saved for backward {results['on']['memory']['saved'] / 2**30:.2f} "
            f"against {results['off']['memory']['saved'] / 2**30:.2f} GiB){slower}"
        )
    elif peak("on") and results["off"]["stopped"]:
        notes.append(
            f"- activation checkpointing on / off: under {peak('on') / results['off']['stopped']:.2f} (off passed "
            f"{results['off']['stopped'] / 2**30:.1f} GiB)"
        )
    if peak("on") and peak("3d"):
        notes.append(f"- 4D with checkpointing / 3D baseline: {peak('on') / peak('3d'):.1f}x the memory")
    patch4d = _cardiac_patch(_cardiac_parser((), False, device), quick)
    voxels = math.prod(patch4d)
    notes.append(
        f"- by hand, float32 at {'x'.join(map(str, patch4d))}: the input is {voxels * 4 / 2**30:.3f} GiB, one "
        f"8-channel activation of the first level {8 * voxels * 4 / 2**30:.3f} GiB (16 channels at level 1 and 32 "
        "at level 2 are 1/8 and 1/64 of that), the 3-class logits and their softmax "
        f"{3 * voxels * 4 / 2**30:.3f} GiB each"
    )
    memory_how = (
        "`torch.cuda.max_memory_allocated` above what was allocated before the step, plus the batch, the "
        "parameters and Adam's state (the CUDA context and the caching allocator's slack come on top)"
        if device.startswith("cuda")
        else "growth of the peak resident set (`ru_maxrss`) over the process's once the model, optimizer and batch "
        "were built, plus the bytes of the batch, the parameters and Adam's state; the step's working memory "
        "(oneDNN's buffers, the heap's) is in it, one-off library set-up is not (a step on an 8x8x8(x4) crop comes "
        "first). A proxy for the GPU's: the CUDA context, cuDNN's workspaces and the caching allocator's slack "
        "differ"
    )
    precision = "under autocast (the bundle's `amp`)" if device.startswith("cuda") else "float32"
    return "\n".join(
        [
            f"Machine: {_machine(device, threads)}; device {device}; load average {load_start[0]:.1f} at the start "
            f"and {load_end[0]:.1f} at the end (1 min). One training step (zero_grad, forward, "
            "`SparseTemporalDiceLoss`, backward, Adam step; network, loss and optimizer built from the bundle's "
            "train.json by `monai.bundle.ConfigParser`, `activation_checkpointing` overridden), batch 1, "
            f"{precision}, on a synthetic LV-like crop whose label holds 0/1/2 in {CARDIAC_ANNOTATED} random frames "
            "and 255 in the others (fixed seed). Peak memory, measured on the first full-size step of a fresh "
            f"subprocess (the caller's environment): {memory_how}. Saved for backward: bytes of the distinct storages "
            "autograd keeps during the forward and the loss (`saved_tensors_hooks`; with checkpointing, the blocks' "
            "inputs). Step time: "
            f"median / best of {repeats} steps after one warm-up in another subprocess "
            f"({', '.join(f'{k}={time_env[k]}' for k in _WORKER_ENV)}).",
            "",
            "| training step | input | parameters | peak memory (GiB) | saved for backward (GiB) | step (s), "
            "median / best |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *notes,
        ]
    )


def _bundles_section(
    bundle: str, repeats: int, threads: int | None, device: str, quick: bool | str, train: str | tuple = "paper,demo"
):
    """Measure every bundle named by ``bundle`` (see ``scripts/bundle_benchmark.py``), one after the other.

    Yields:
        ``(heading, Markdown)``, one section per bundle, as soon as it is measured.
    """
    import bundle_benchmark

    env = {**os.environ, **{k: v for k, v in _WORKER_ENV.items() if k not in os.environ}}

    def run(spec: dict, env: dict, worker: str) -> dict:
        return _run_worker(spec, env, worker, module="bundle_benchmark")

    for name in bundle_benchmark.bundle_names(bundle):
        load = os.getloadavg()[0]
        results = bundle_benchmark.measure([name], run, env, device, threads, repeats, quick, train)
        machine = f"{_machine(device, threads)}; device {device}; load average {load:.1f} at the start (1 min)"
        parts = bundle_benchmark.quick_parts(quick)
        if parts:
            machine += f"; `--quick`: the {' and '.join(sorted(parts))} sizes about halved along every spatial axis"
        yield f"{name}: speed, overheads and memory", bundle_benchmark.render(results, machine, parts)


def _write_section(path: Path, heading: str, body: str, command: str) -> None:
    """Write ``## heading`` into the Markdown file at ``path``, replacing that section if present."""
    section = f"## {heading}\n\nProduced by `{command}` (from the repository root, in the project venv).\n\n{body}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nRatios come from one run, side by side.\n\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip("\n") + "\n"
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(
    repeats: int = 3,
    out: str | None = None,
    threads: int | None = None,
    only: str | None = None,
    device: str = "cpu",
    quick: bool | str = False,
    bundle: str = "all",
    train: str | tuple = "paper,demo",
) -> None:
    """Run the benchmark sections side by side and print their tables.

    Args:
        repeats: timed repetitions of each measurement (the median and the best are reported).
        out: also write each section, with the command that produced it, into this Markdown file (a section
            already there is replaced, the others are kept).
        threads: torch intra-op threads (default: torch's choice).
        only: run one section, ``"bundles"``, ``"abdominal"``, ``"conv4d"`` or ``"cardiac"`` (default: all).
        device: device of the bundles, conv4d and cardiac sections, ``"cpu"`` or ``"cuda"`` (the abdominal section
            runs on the CPU).
        quick: to check the script, not to measure: the conv4d section's space divided by 4, the cardiac section's
            crop halved along every axis, the bundles section's inputs and volumes about halved along every spatial
            axis (the abdominal section is unchanged). For the bundles section only, ``network``, ``inference`` or
            ``network,inference`` shrinks just those measurements (the others at the paper's sizes).
        bundle: the bundles section's bundle (a folder name of ``bundles/``) or ``"all"``.
        train: the bundles section's training-loop configurations, ``paper`` (``train.json``'s network, batch and
            loader at the network table's input, on phantom data), ``demo`` (``demo.json`` as the demo runs) or
            ``paper,demo``.

    Raises:
        ValueError: for an unknown section.
    """
    if only is not None and only not in SECTIONS:
        raise ValueError(f"--only must be one of {SECTIONS}; got {only!r}.")
    if threads:
        torch.set_num_threads(threads)
    command = shlex.join(["python", *sys.argv])
    if only in (None, "bundles"):
        for heading, text in _bundles_section(bundle, repeats, threads, device, quick, train):
            print(f"## {heading}\n\n{text}")
            if out:
                _write_section(Path(out), heading, text, command)
    if only in (None, "abdominal"):
        text = _abdominal_section(repeats)
        print(text)
        if out:
            _write_section(Path(out), "abdominal_ct_multiorgan_segmentation", text, command)
    if only in (None, "conv4d"):
        text = _conv4d_section(repeats, threads, device, quick is True)
        print(text)
        if out:
            _write_section(Path(out), "Conv4d", text, command)
    if only in (None, "cardiac"):
        text = _cardiac_section(repeats, threads, device, quick is True)
        print(text)
        if out:
            _write_section(Path(out), "cardiac_ccta_4d_segmentation: training step memory", text, command)


if __name__ == "__main__":
    fire.Fire(main)
