"""Per-bundle benchmark (issue 14): network speed and memory, training-loop overhead, whole-volume inference.

Run through ``python scripts/benchmark.py --only bundles [--bundle NAME|all] [--device cpu|cuda]``; each bundle is
measured in subprocesses of its own (``benchmark._run_worker``), with the allocator settings of the conv4d section.

Three workers, each printing one JSON object:

- ``network_worker``: the network ``train.json`` builds (the paper's configuration), on a random batch of the paper's
  training input size (``PAPER[bundle]["train_input"]``): forward (eval mode, no gradients) and forward+backward
  (train mode, gradient of the sum of the outputs) times, multiply-adds (``torch.utils.flop_counter``: FLOPs / 2),
  multiply-adds per second; in another subprocess, in the caller's environment (glibc's allocator defaults, as a
  training run has them), the peak memory of one forward+backward (CPU: growth of the process's peak resident set
  over the built network and batch; CUDA: ``max_memory_allocated``); then the same for a MONAI ``BasicUNet``
  scaled to about the same number of parameters on the same input (its spatial sizes rounded up to a multiple of
  16, its ``spatial_dims`` the bundle's; the 4D network's reference is 3D with time folded into the last axis).
- ``train_worker``: the bundle's real ``SupervisedTrainer`` on the demo's phantom data, in the paper's configuration
  (``train.json``'s network, batch and loader at the measured training input, see ``PAPER_TRAIN``) or the demo's
  (``train.json`` + ``demo.json``); its handlers, post-processing, metric and data loader as configured, validation
  off; for warm-up plus timed iterations, timed from one ``ITERATION_COMPLETED`` to the next (data loading
  included); after each timed iteration, outside its interval, the bare step (``zero_grad``, the bundle's loss on
  the network's output, ``backward``, the bundle's optimizer ``step``) on that iteration's batch as plain tensors,
  with the same network, loss and optimizer objects.
- ``inference_worker``: the network and ``inferer`` of ``inference.json`` on a random volume of the paper's size
  (``PAPER[bundle]["volume"]``, the pre-processed grid the network sees) and on the same volume doubled along its
  last spatial axis. Every network call the inferer makes is recorded (its input shape); the network compute is
  then timed by calling the network alone on each recorded shape, and the overhead is the inference time over
  that compute.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The paper's training input (batch, channels, spatial...) and whole-volume size for inference (channels,
#: spatial...), per bundle, on the grid the network sees after pre-processing (sizes from issue 14 and the papers).
PAPER: dict[str, dict[str, list[int]]] = {
    # Gibson/Roth et al.: batch 3 of 64^3 patches; a 128 x 128 x 200 CT at 3 mm
    "abdominal_ct_multiorgan_segmentation": {"train_input": [3, 1, 64, 64, 64], "volume": [1, 128, 128, 200]},
    # van de Leemput et al.: batch 2 of 124^3 sub-volumes of 19 time points; a 19-frame crop of 200 x 200 x 120
    "brain_ctp_tissue_segmentation": {"train_input": [2, 19, 124, 124, 124], "volume": [19, 200, 200, 120]},
    # Kayalibay et al., BraTS: batch 1 of the 144 x 160 x 128 brain crop, 4 modalities (the crop is the volume)
    "brain_tumor_mri_segmentation": {"train_input": [1, 4, 144, 160, 128], "volume": [4, 144, 160, 128]},
    # 4D CNN: batch 1 of 96 x 96 x 64 x 16 crops; a 200 x 200 x 120 x 20 sequence
    "cardiac_ccta_4d_segmentation": {"train_input": [1, 1, 96, 96, 64, 16], "volume": [1, 200, 200, 120, 20]},
    # Kayalibay et al., hands: batch 1 of whole 120 x 120 x 64 volumes (zoom 0.25)
    "hand_mri_bone_segmentation": {"train_input": [1, 1, 120, 120, 64], "volume": [1, 120, 120, 64]},
    # 2D U-Net: batch 3 of 512 x 512 slices; a 512 x 512 x 40 head CT
    "head_ct_neuroanatomy_segmentation": {"train_input": [3, 1, 512, 512], "volume": [1, 512, 512, 40]},
}

#: ``--quick`` inputs: every spatial axis about halved, on each network's size grid.
QUICK: dict[str, dict[str, list[int]]] = {
    "abdominal_ct_multiorgan_segmentation": {"train_input": [3, 1, 32, 32, 32], "volume": [1, 64, 64, 96]},
    "brain_ctp_tissue_segmentation": {"train_input": [1, 19, 92, 92, 92], "volume": [19, 64, 64, 48]},
    "brain_tumor_mri_segmentation": {"train_input": [1, 4, 72, 80, 64], "volume": [4, 72, 80, 64]},
    "cardiac_ccta_4d_segmentation": {"train_input": [1, 1, 48, 48, 32, 16], "volume": [1, 64, 64, 48, 16]},
    "hand_mri_bone_segmentation": {"train_input": [1, 1, 64, 64, 32], "volume": [1, 64, 64, 32]},
    "head_ct_neuroanatomy_segmentation": {"train_input": [3, 1, 256, 256], "volume": [1, 256, 256, 20]},
}


def _patch_input(batch: int, size: list[int]) -> dict:
    """Overrides for bundles that sample patches: ``train.json``'s batch and ``patch_size``.

    Returns:
        the overrides.
    """
    return {"batch_size": batch, "patch_size": size}


#: The training loop in the paper's configuration: ``demo.json`` supplies the phantom data, minus its keys that
#: shrink the network, its input or the loader (``drop``: ``train.json``'s values apply); ``input`` maps the
#: measured training input (``PAPER`` or ``QUICK``) to the overrides that give the trainer that batch and spatial
#: size (where the demo's phantom is smaller than the paper's input, a phantom of that size).
PAPER_TRAIN: dict[str, dict] = {
    "abdominal_ct_multiorgan_segmentation": {
        "drop": ["network_def#features", "patch_size", "pixdim", "sw_roi_size", "num_workers"],
        "input": _patch_input,
    },
    "brain_ctp_tissue_segmentation": {
        "drop": ["network_def#features", "tile_roi_size", "num_workers"],
        "input": _patch_input,
    },
    "brain_tumor_mri_segmentation": {
        "drop": ["roi_size", "num_workers"],
        "input": lambda batch, size: {"batch_size": batch, "roi_size": size},
    },
    "cardiac_ccta_4d_segmentation": {
        "drop": ["patch_size", "pixdim", "num_workers"],
        "input": _patch_input,
    },
    "hand_mri_bone_segmentation": {  # whole volumes: a phantom of the input's size (the demo's zoom 1.0 kept)
        "drop": ["num_workers"],
        "input": lambda batch, size: {
            "batch_size": batch,
            "phantom_shape": size,
            "phantom_spacing": [240.0 / size[0], 240.0 / size[1], 128.0 / size[2]],
        },
    },
    "head_ct_neuroanatomy_segmentation": {  # whole slices: phantom heads of the input's slice size, 230 mm across
        "drop": ["network_def#features", "num_workers"],
        "input": lambda batch, size: {
            "batch_size": batch,
            "phantom_datalist": "$common.phantoms.make_dataset('head_ct_neuroanatomy', @dataset_dir, n_cases=3, "
            f"seed=0, n_validation=1, n_test=1, shape={[*size, 40]}, "
            f"spacing={[230.0 / size[0], 230.0 / size[1], 5.0]})",
        },
    },
}

#: The training-loop configurations ``--train`` can name.
TRAIN_CONFIGS = ("paper", "demo")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _parser(bundle: str, files: list[str], device: str, overrides: dict | None = None):
    from monai.bundle import ConfigParser

    configs = ROOT / "bundles" / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / f) for f in files])
    parser["bundle_root"] = str(ROOT / "bundles" / bundle)
    parser["device"] = f"$torch.device({device!r})"
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def count_macs(network: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass (``torch.utils.flop_counter``: convolutions and matrix products, / 2).

    Returns:
        the count.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(x)
    return counter.get_total_flops() // 2


def reference_unet(spatial_dims: int, in_channels: int, out_channels: int, n_params: int) -> torch.nn.Module:
    """A MONAI ``BasicUNet`` whose features are scaled so that its parameter count is close to ``n_params``.

    Returns:
        the network.
    """
    from monai.networks.nets import BasicUNet

    base = (32, 32, 64, 128, 256, 32)

    def build(scale: float) -> torch.nn.Module:
        features = tuple(max(4, round(f * scale)) for f in base)
        return BasicUNet(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, features=features
        )

    full = sum(p.numel() for p in build(1.0).parameters())
    return build(math.sqrt(n_params / full))


def _measure_network(
    net: torch.nn.Module, x: torch.Tensor, device: torch.device, repeats: int, amp: bool, memory: bool
) -> dict:
    """The peak memory of one forward+backward (``memory``), or forward and forward+backward times and multiply-adds.

    Returns:
        the measurements (JSON-able).
    """
    params = [p for p in net.parameters() if p.requires_grad]

    def forward():
        with torch.no_grad(), torch.autocast(device.type, enabled=amp):
            net(x)

    def forward_backward():
        for p in params:
            p.grad = None
        with torch.autocast(device.type, enabled=amp):
            y = net(x)
        y.float().sum().backward()

    net.train()
    result = {"params": sum(p.numel() for p in params), "input": list(x.shape)}
    if memory:  # one measurement per process: the CPU's peak resident set only grows
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            base = _peak_rss()
        forward_backward()
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss()
        return {**result, "peak_bytes": peak - base}
    fb = _timed(forward_backward, device, repeats)
    net.eval()
    fwd = _timed(forward, device, repeats)
    return {**result, "macs": count_macs(net, x), "forward": fwd, "forward_backward": fb}


def network_worker(spec_json: str) -> None:
    """Subprocess body: the bundle's network and its MONAI reference at the paper's training input; print JSON."""
    spec = json.loads(spec_json)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device, bundle = torch.device(spec["device"]), spec["bundle"]
    amp = device.type == "cuda" and spec["amp"]
    shape = spec.get("train_input") or PAPER[bundle]["train_input"]
    parser = _parser(bundle, ["train.json"], spec["device"])
    if spec["which"] == "bundle":
        net = parser.get_parsed_content("network_def").to(device)
        x = torch.randn(shape, device=device)
    else:  # the MONAI reference of about the same size
        ours = parser.get_parsed_content("network_def")
        n_params = sum(p.numel() for p in ours.parameters())
        spatial = shape[2:] if len(shape) <= 5 else [*shape[2:-2], shape[-2] * shape[-1]]  # 4D: time into z
        spatial = [16 * math.ceil(s / 16) for s in spatial]
        out_channels = int(parser.get_parsed_content("num_classes"))
        net = reference_unet(len(spatial), shape[1], out_channels, n_params).to(device)
        x = torch.randn([shape[0], shape[1], *spatial], device=device)
    print(json.dumps(_measure_network(net, x, device, spec["repeats"], amp, spec.get("task") == "memory")))


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.as_tensor() if hasattr(value, "as_tensor") else value
    return value


def paper_train_overlay(bundle: str, train_input: list[int], work: Path) -> tuple[str, dict]:
    """The overlay and overrides that run ``train.json`` in the paper's configuration on the demo's phantom data.

    Args:
        bundle: bundle folder name.
        train_input: ``[batch, channels, *spatial]``, the measured training input.
        work: folder the overlay is written to.

    Returns:
        the path of ``demo.json`` without the keys of ``PAPER_TRAIN[bundle]["drop"]``, and the overrides that set
        the batch and spatial size.
    """
    entry = PAPER_TRAIN[bundle]
    demo = json.loads((ROOT / "bundles" / bundle / "configs" / "demo.json").read_text())
    overlay = {k: v for k, v in demo.items() if k not in entry["drop"]}
    path = work / "paper_overlay.json"
    path.write_text(json.dumps(overlay, indent=1))
    return str(path), entry["input"](int(train_input[0]), [int(n) for n in train_input[2:]])


def train_worker(spec_json: str) -> None:
    """Subprocess body: the bundle's real trainer (paper or demo configuration) against the bare step; print JSON."""
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    spec = json.loads(spec_json)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    bundle, device = spec["bundle"], torch.device(spec["device"])
    configs = ROOT / "bundles" / bundle / "configs"
    work = Path(spec.get("work_dir") or tempfile.mkdtemp(prefix=f"bench_{bundle}_"))  # checkpoints, logs
    work.mkdir(parents=True, exist_ok=True)
    files = [str(configs / "train.json"), str(configs / "demo.json")]
    overrides = dict(spec.get("overrides", {}))
    if spec.get("config", "demo") == "paper":
        files[1], paper = paper_train_overlay(bundle, spec["train_input"], work)
        overrides = {**paper, **overrides}
    wf = ConfigWorkflow(
        config_file=files,
        logging_file=str(configs / "logging.conf"),
        workflow_type="train",
        bundle_root=str(ROOT / "bundles" / bundle),
        dataset_dir=spec.get("data_dir") or str(work / "data"),
        ckpt_dir=str(work / "models"),
        output_dir=str(work / "eval"),
        device=f"$torch.device({spec['device']!r})",
        val_interval=10**6,  # no validation inside the timed iterations: it is not part of a training iteration
        **overrides,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    n_iter = spec["warmup"] + spec["iterations"]
    marks: list[float] = []
    iteration: list[float] = []
    waits: list[float] = []
    batches: list = []

    @trainer.on(Events.GET_BATCH_STARTED)
    def _batch_started(engine):
        engine.state.bench_fetch = time.perf_counter()

    @trainer.on(Events.GET_BATCH_COMPLETED)
    def _batch_completed(engine):
        waits.append(time.perf_counter() - engine.state.bench_fetch)
        batches[:] = [engine.state.batch]  # collated (the trainer decollates it after the iteration)

    network, loss_fn, optimizer = trainer.network, trainer.loss_function, trainer.optimizer
    bare: list[float] = []
    shapes: list[list[int]] = []

    def bare_step() -> float:
        """The bare step on this iteration's batch (plain tensors, same network, loss and optimizer objects).

        Returns:
            its time in seconds.
        """
        image, label = trainer.prepare_batch(batches[0], device, trainer.non_blocking)[:2]
        image, label = _plain(image), _plain(label)
        shapes[:] = [list(image.shape)]
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        loss_fn(network(image), label).backward()
        optimizer.step()
        _sync(device)
        return time.perf_counter() - start

    @trainer.on(Events.ITERATION_COMPLETED)
    def _mark(engine):  # registered last: runs after the bundle's own handlers
        _sync(device)
        now = time.perf_counter()
        if marks:
            iteration.append(now - marks[-1])
        if len(iteration) > spec["warmup"]:  # interleaved with the trainer's iterations, side by side
            bare.append(bare_step())
        if len(iteration) >= n_iter:
            engine.terminate()
        marks.append(time.perf_counter())  # the next iteration is timed from here, after the bare step

    trainer.run()
    iteration = iteration[spec["warmup"] :]
    waits = waits[spec["warmup"] + 1 : spec["warmup"] + 1 + len(iteration)]  # the first fetch is not timed
    wf.finalize()
    print(
        json.dumps(
            {
                "iteration": iteration,
                "data_wait": waits,
                "bare_step": bare[: len(iteration)],
                "batch": shapes[0],
                "epoch_length": int(trainer.state.epoch_length),
                "loader_length": len(trainer.data_loader),
                "num_workers": int(trainer.data_loader.num_workers),
                "params": sum(p.numel() for p in network.parameters()),
            }
        )
    )


def inference_worker(spec_json: str) -> None:
    """Subprocess body: the inferer of ``inference.json`` on a paper-size volume and on it doubled; print JSON."""
    spec = json.loads(spec_json)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    bundle, device = spec["bundle"], torch.device(spec["device"])
    amp = device.type == "cuda" and spec["amp"]
    parser = _parser(bundle, ["inference.json"], spec["device"], spec.get("overrides"))
    net = parser.get_parsed_content("network_def").to(device).eval()
    inferer = parser.get_parsed_content("inferer")
    calls: list[tuple[int, ...]] = []
    hook = net.register_forward_pre_hook(lambda _m, args: calls.append(tuple(args[0].shape)))
    volume = spec.get("volume") or PAPER[bundle]["volume"]
    results = []
    for factor, timed in ((1, False), (1, True), (2, False), (2, True)):  # each size warmed up first (kernels chosen)
        if len(volume) <= 4:
            shape = [1, *volume[:-1], volume[-1] * factor]
        else:
            shape = [1, *volume[:-2], volume[-2] * factor, volume[-1]]
        x = torch.randn(shape, device=device)
        calls.clear()
        with torch.no_grad(), torch.autocast(device.type, enabled=amp):
            _sync(device)
            start = time.perf_counter()
            inferer(x, net)
            _sync(device)
            total = time.perf_counter() - start
        recorded = list(calls)
        if not timed:
            continue
        counts: dict[tuple[int, ...], int] = {}
        for s in recorded:
            counts[s] = counts.get(s, 0) + 1
        compute = 0.0
        for s, n in counts.items():
            window = torch.randn(s, device=device)

            def call(window=window):
                with torch.no_grad(), torch.autocast(device.type, enabled=amp):
                    net(window)

            compute += n * statistics.median(_timed(call, device, spec["repeats"]))
        results.append(
            {
                "shape": shape,
                "seconds": total,
                "compute": compute,
                "calls": len(recorded),
                "windows": {"x".join(map(str, s)): n for s, n in counts.items()},
                "input_voxels": sum(math.prod(s[2:]) * s[0] for s in recorded),
            }
        )
    hook.remove()
    extra = {}
    if hasattr(inferer, "size_difference"):  # valid convolutions: the ideal input is the padded volume
        extra["ideal_input_voxels"] = [math.prod(v + inferer.size_difference for v in r["shape"][2:]) for r in results]
    print(json.dumps({"runs": results, **extra}))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def bundle_names(bundle: str) -> list[str]:
    """The bundles ``--bundle`` names: one, or ``all`` (every folder of ``bundles/`` with ``configs/train.json``).

    Returns:
        bundle folder names.

    Raises:
        ValueError: for a name that is not a bundle.
    """
    found = sorted(p.parent.parent.name for p in (ROOT / "bundles").glob("*/configs/train.json"))
    if bundle == "all":
        return found
    if bundle not in found:
        raise ValueError(f"--bundle must be 'all' or one of {found}; got {bundle!r}.")
    return [bundle]


def gpu_memory_estimate(net: dict) -> float:
    """Expected GPU memory (bytes) of a float32 training step at the paper's input, from the CPU measurement.

    The CPU's peak growth over one forward+backward holds the activations kept for backward and the gradients;
    add the weights, Adam's two moments, the batch and 1 GiB for the CUDA context and cuDNN workspaces.

    Returns:
        bytes.
    """
    return net["peak_bytes"] + 3 * 4 * net["params"] + 4 * math.prod(net["input"]) + 2**30


def _listed(value: str | tuple | list) -> set[str]:
    """The names of a command-line list: a comma-separated string, or the tuple fire makes of ``a,b``.

    Returns:
        the non-empty names, stripped.
    """
    return {p.strip() for p in (value.split(",") if isinstance(value, str) else value) if p.strip()}


def quick_parts(quick: bool | str | tuple | list) -> set[str]:
    """Which measurements ``--quick`` shrinks: all of them (``True``), none (``False``), or those named.

    Args:
        quick: ``True``/``False``, or ``"network"``, ``"inference"`` or both (comma-separated string or a tuple, as
            fire passes ``--quick network,inference``).

    Returns:
        a subset of ``{"network", "inference"}``.

    Raises:
        ValueError: for an unknown name.
    """
    if quick is True or quick is False:
        return {"network", "inference"} if quick else set()
    parts = _listed(quick)
    if not parts <= {"network", "inference"}:
        raise ValueError(f"--quick takes true, false, 'network' and/or 'inference'; got {quick!r}.")
    return parts


def train_configs(train: str | tuple | list) -> list[str]:
    """The training-loop configurations ``--train`` names, in ``TRAIN_CONFIGS`` order.

    Args:
        train: ``"paper"``, ``"demo"`` or both (comma-separated string or a tuple, as fire passes
            ``--train paper,demo``).

    Returns:
        a non-empty list of names from ``TRAIN_CONFIGS``.

    Raises:
        ValueError: for an unknown name or none.
    """
    names = _listed(train)
    if not names or not names <= set(TRAIN_CONFIGS):
        raise ValueError(f"--train takes 'paper' and/or 'demo'; got {train!r}.")
    return [n for n in TRAIN_CONFIGS if n in names]


def measure(
    names: list[str], run_worker, env: dict, device: str, threads, repeats: int, quick, train=TRAIN_CONFIGS
) -> dict:
    """Run the three workers for each bundle (each in its own subprocesses) and collect their results.

    The training loop runs once per configuration of ``train`` (see :func:`train_configs`): ``paper`` at the
    network table's input, ``demo`` as ``demo.json`` has it.

    Returns:
        ``{bundle: {"network": ..., "reference": ..., "train": {config: ...}, "inference": ...}}``.
    """
    results: dict[str, dict] = {}
    for name in names:
        common = {"bundle": name, "device": device, "threads": threads, "amp": True, "repeats": repeats}
        parts = quick_parts(quick)  # smaller inputs, still valid for each network
        train_input = (QUICK if "network" in parts else PAPER)[name]["train_input"]
        volume = (QUICK if "inference" in parts else PAPER)[name]["volume"]
        result = {}
        for which in ("bundle", "reference"):
            spec = {**common, "which": which, "train_input": train_input}
            key = "network" if which == "bundle" else "reference"
            result[key] = run_worker(spec, env, "network_worker")
            # memory in the caller's environment, as a training run has it (glibc's defaults)
            result[key].update(run_worker({**spec, "task": "memory"}, dict(os.environ), "network_worker"))
        result["train"] = {}
        for config in train_configs(train):
            # the paper's steps are long and steady: fewer of them
            counts = (
                {"warmup": 2, "iterations": max(4, 2 * repeats)}
                if config == "paper"
                else {"warmup": 3, "iterations": max(6, 4 * repeats)}
            )
            spec = {**common, **counts, "config": config, "train_input": train_input}
            result["train"][config] = run_worker(spec, env, "train_worker")
        result["inference"] = run_worker({**common, "volume": volume}, env, "inference_worker")
        results[name] = result
    return results


def render(results: dict, machine: str, quick: set[str] | None = None) -> str:
    """The section's Markdown: the three tables, then each bundle's readings against the issue 14 targets.

    Args:
        results: from :func:`measure`.
        machine: the machine's description.
        quick: the measurements ``--quick`` shrank (see :func:`quick_parts`); their tables say so.

    Returns:
        Markdown (without the heading).
    """
    quick = quick or set()
    net_size = (
        "about half the paper's training input (`--quick`)" if "network" in quick else "the paper's training input"
    )
    volume_size = "about half the paper's size (`--quick`)" if "inference" in quick else "the paper's size"
    net_rows, train_rows, inf_rows, notes = [], [], [], []
    for name, r in results.items():
        net, ref, tr, inf = r["network"], r["reference"], r["train"], r["inference"]
        fwd, fb = _median(net["forward"]), _median(net["forward_backward"])
        rate, fb_rate = net["macs"] / fwd, 3 * net["macs"] / fb
        ref_rate, ref_fb_rate = (
            ref["macs"] / _median(ref["forward"]),
            3 * ref["macs"] / _median(ref["forward_backward"]),
        )
        shape = " x ".join(map(str, net["input"]))
        net_rows.append(
            f"| {name} | {shape} | {net['params'] / 1e6:.3f}M | {net['macs'] / 1e9:.1f} | {fwd:.3f} | {fb:.3f} | "
            f"{rate / 1e9:.1f} / {fb_rate / 1e9:.1f} | {ref['params'] / 1e6:.3f}M: {ref_rate / 1e9:.1f} / "
            f"{ref_fb_rate / 1e9:.1f} | {ref_rate / rate:.2f} / {ref_fb_rate / fb_rate:.2f} | "
            f"{_gib(net['peak_bytes'])} | {_gib(gpu_memory_estimate(net))} |"
        )
        loop = {}  # configuration -> (median, mean) overhead
        for config, run in tr.items():
            it, bare, wait = _median(run["iteration"]), _median(run["bare_step"]), _median(run["data_wait"])
            mean_it = statistics.fmean(run["iteration"])
            loop[config] = (it / bare, mean_it / bare)
            params = f"{run['params'] / 1e6:.3f}M" if "params" in run else "-"
            train_rows.append(
                f"| {name} | {config} | {params} | {' x '.join(map(str, run['batch']))} | {it:.3f} / {mean_it:.3f} / "
                f"{max(run['iteration']):.3f} | {bare:.3f} | {wait:.3f} | {it / bare:.2f} / {mean_it / bare:.2f} | "
                f"{run.get('num_workers', '-')} | {run['loader_length']} / {run['epoch_length']} |"
            )
        target = "paper" if "paper" in loop else next(iter(loop))
        loop_note = f"training-loop overhead ({target} configuration) {loop[target][0]:.2f} (median; target <= 1.15: "
        loop_note += f"{_verdict(loop[target][0] <= 1.15)}), {loop[target][1]:.2f} on the mean"
        loop_note += "".join(f"; {c} configuration {o[0]:.2f} / {o[1]:.2f}" for c, o in loop.items() if c != target)
        one, two = inf["runs"]
        over = one["seconds"] / one["compute"]
        scaling = two["seconds"] / one["seconds"]
        tiling = ""
        if "ideal_input_voxels" in inf:
            tiling = f"{one['input_voxels'] / inf['ideal_input_voxels'][0]:.2f}"
        windows = ", ".join(f"{n} x {s}" for s, n in one["windows"].items())
        inf_rows.append(
            f"| {name} | {' x '.join(map(str, one['shape'][1:]))} | {windows} | {one['seconds']:.2f} | "
            f"{one['compute']:.2f} | {over:.2f} | {two['seconds']:.2f} ({two['seconds'] / two['compute']:.2f}) | "
            f"{scaling:.2f} | {tiling or '-'} |"
        )
        notes.append(
            f"- {name}: {loop_note}; inference overhead {over:.2f} "
            f"(target <= 1.2: {_verdict(over <= 1.2)}); "
            f"doubling the volume x{scaling:.2f} the time; MONAI reference / ours, multiply-adds per second "
            f"{ref_rate / rate:.2f} forward, {ref_fb_rate / fb_rate:.2f} forward+backward (target <= 1.2: "
            f"{_verdict(ref_rate / rate <= 1.2 and ref_fb_rate / fb_rate <= 1.2)})"
            + (f"; valid tiling processes {tiling}x the ideal input voxels (target <= 1.5)" if tiling else "")
        )
    return "\n".join(
        [
            f"Machine: {machine}. Each measurement runs in a subprocess of its own; the timings with the conv4d "
            "section's allocator settings (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=2^36, OMP_WAIT_POLICY=PASSIVE, "
            "unless already set), the peak memory with the caller's (glibc's defaults, as a training run has them).",
            "",
            f"**Network at {net_size}** (the network `train.json` builds; forward in eval mode without "
            "gradients, forward+backward in train mode; medians after one warm-up; multiply-adds from "
            "`torch.utils.flop_counter`, forward+backward counted as 3x the forward's; peak: growth of the process's "
            "peak resident set over the first forward+backward on CPU, `max_memory_allocated` on CUDA; the reference "
            "is MONAI's `BasicUNet` scaled to the same parameter count on the same input rounded up to a multiple of "
            "16, the 4D input's time folded into its last axis; expected GPU memory: see the README):",
            "",
            "| bundle | input | parameters | GMACs | forward (s) | forward+backward (s) | GMAC/s fwd / fwd+bwd "
            "| BasicUNet GMAC/s fwd / fwd+bwd | reference / ours | peak (GiB) | expected GPU, fp32 (GiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *net_rows,
            "",
            "**Training loop** (the real `SupervisedTrainer` with the bundle's data loader, augmentation, handlers, "
            "post-processing and metric (validation off), on the demo's phantom data; *paper*: `train.json`'s "
            "network, batch, loader workers and input (the network table's), 2 warm-up iterations; *demo*: "
            "`train.json` + `demo.json` as the demo runs, 3 warm-up iterations; timed from one "
            "`ITERATION_COMPLETED` to the next; the bare step (zero_grad, forward, the "
            "bundle's loss, backward, the bundle's optimizer step) runs after each timed iteration on that "
            "iteration's batch, as plain tensors, with the same objects, outside the timed interval; data wait: "
            "`GET_BATCH_STARTED` to `GET_BATCH_COMPLETED`; the target applies to the paper's configuration):",
            "",
            "| bundle | configuration | parameters | batch | iteration (s) median / mean / max | bare step (s) "
            "| data wait (s) | overhead median / mean | loader workers | loader batches / epoch length |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *train_rows,
            "",
            "**Whole-volume inference** (the network and `inferer` of `inference.json`, on a random volume of "
            f"{volume_size} on the network's grid, after a warm-up on it; compute: the network alone on every window "
            "shape the inferer called it with, times the calls; then the volume doubled along its last spatial axis "
            "(4D: along z)):",
            "",
            "| bundle | volume | network calls | time (s) | network compute (s) | overhead | doubled: time (s) "
            "(overhead) | doubled / single | valid tiling: input / ideal voxels |",
            "|---|---|---|---|---|---|---|---|---|",
            *inf_rows,
            "",
            *notes,
        ]
    )
