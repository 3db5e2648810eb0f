"""Speed benchmarks, measured side by side in one run (machines here are noisy: compare ratios, not seconds).

    python scripts/benchmark.py                 # prints a Markdown table
    python scripts/benchmark.py --out BENCHMARKS.md

What it measures, for bundles/abdominal_ct_multiorgan_segmentation:
- one training iteration (forward, Dice loss, backward, Adam step) at the paper's settings (19M parameters,
  batch 3 of 64^3) and at the demo's (features 8-64, batch 3 of 32^3);
- inference of one CT volume at the paper's resolution (128 x 128 x 80 voxels of 3 mm) with the paper's scheme
  (the network reshaped to the whole xy plane, tiles overlapping along z) against MONAI's usual 64^3 sliding
  window with the same overlap: the paper says reshaping makes inference more efficient (Section II.A);
- the B-spline + rigid augmentation of one 64^3 sample, and the phantom generator for one case.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import fire
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.phantoms.abdominal_ct import generate_abdominal_ct  # noqa: E402
from common.transforms.augmentation import RandBSplineAffined  # noqa: E402

CONFIGS = ROOT / "bundles" / "abdominal_ct_multiorgan_segmentation" / "configs"


def _time(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


def _parser(*overlays: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), *(str(CONFIGS / o) for o in overlays)])
    return parser


def _train_step(parser: ConfigParser, patch: int, batch: int):
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


def main(repeats: int = 3, out: str | None = None, threads: int | None = None) -> None:
    """Time the paper's and the demo's training step and the two inference tilings side by side; print the table.

    Args:
        repeats: timed repetitions of each measurement (the median and the best are reported).
        out: also write the table, with the command that produced it, to this Markdown file.
        threads: torch intra-op threads (default: torch's choice).
    """
    if threads:
        torch.set_num_threads(threads)
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
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(
            f"# Benchmarks\n\nProduced by `python scripts/benchmark.py --repeats {repeats} --out {out}` "
            "(from the repository root, in the project venv). Ratios come from one run, side by side.\n\n"
            "## abdominal_ct_multiorgan_segmentation\n\n" + text + "\n"
        )


if __name__ == "__main__":
    fire.Fire(main)
