"""Pre-emption, for every bundle: real training processes killed with SIGKILL (once mid-epoch, once in the middle of
writing a checkpoint) and resumed with ``--resume true`` end exactly where the uninterrupted run ends, with the same
losses; a NaN loss stops training with an error naming where, and leaves the last good checkpoints.

The runs are ``python -m monai.bundle run`` on ``train.json`` + ``demo.json`` (a tiny phantom, a few iterations)
plus a test overlay written to a temporary folder. The overlay only prepends calls to the hooks below to the
bundle's own ``run`` list: they record each iteration's loss (``float.hex``, exact) in a file, and pause the process
at a known point (after an iteration, or inside the n-th checkpoint write, after the temporary file is written and
before it is renamed) after writing a marker file; the test waits for the marker and kills the process. Nothing in
the product code knows about the test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow

from common.handlers import load_training_checkpoint
from tests.conftest import cli_args, fast_overrides

# ------------------------------------------------------------------------------------------- hooks (subprocess side)


def record_losses(trainer, path: str) -> None:
    """Append ``<iteration> <loss as float.hex>`` to ``path`` after every iteration (flushed: survives a kill)."""

    def write(engine):
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{engine.state.iteration} {float(loss).hex()}\n")

    trainer.add_event_handler(Events.ITERATION_COMPLETED, write)


def _pause(marker: str, text: str) -> None:
    Path(marker).write_text(text, encoding="utf-8")
    time.sleep(3600)  # the test kills the process now


def pause_after_iteration(trainer, iteration: int, marker: str) -> None:
    """Write ``marker`` and wait to be killed once iteration ``iteration`` is done (its loss recorded)."""
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=iteration), lambda e: _pause(marker, str(iteration)))


def pause_in_checkpoint_write(nth: int, marker: str) -> None:
    """Wrap ``torch.save``: in the ``nth`` write of a training checkpoint's temporary file, write it whole, then write
    ``marker`` and wait to be killed (before the rename that would publish it)."""
    real_save, writes = torch.save, []

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        name = str(getattr(f, "name", ""))
        if name.endswith(".partial") and isinstance(obj, dict) and "random_state" in obj:
            writes.append(obj["iteration"])
            if len(writes) == nth:
                f.flush()
                _pause(marker, json.dumps({"file": name, "iteration": obj["iteration"]}))

    torch.save = save


# ------------------------------------------------------------------------------------------------ the test side

EPOCHS, EPOCH_LENGTH, INTERVAL = 3, 4, 3  # 12 iterations; checkpoints after 3, 6, 9 and at the end
PHANTOM = {"phantom_n_validation": 1, "phantom_n_test": 1}
KILL_AFTER = 5  # run A is killed after iteration 5 (epoch 2, 1 of 4): it has saved after 3
KILL_IN_WRITE = 2  # run B (resumed after 3) is killed while writing its 2nd checkpoint (after 9): 6 is on disk


def batch_size(configs: Path) -> int:
    parser = ConfigParser()
    parser.read_config([str(configs / "train.json"), str(configs / "demo.json")])
    return int(parser.get_parsed_content("train#dataloader#batch_size"))


def overrides(bundle: Path, tmp_path: Path) -> dict:
    """A tiny run of the bundle's demo: two full batches and one case more per pass over the data, so the passes
    (2 iterations) straddle the epochs and checkpoints fall both inside a pass and at its end."""
    return {
        "dataset_dir": str(tmp_path / "data"),
        "ckpt_dir": str(tmp_path / "models"),
        "phantom_n_train": 2 * batch_size(bundle / "configs") + 1,
        **PHANTOM,
        "train#trainer#max_epochs": EPOCHS,
        "train#trainer#epoch_length": EPOCH_LENGTH,
        "val_interval": 1,
        "num_workers": 0,
        "checkpoint_interval": INTERVAL,
        **fast_overrides(bundle),
    }


def write_overlay(bundle: Path, path: Path, losses: Path, *hooks: str) -> Path:
    train = json.loads((bundle / "configs" / "train.json").read_text(encoding="utf-8"))
    overlay = {
        "imports": [*train["imports"], "$import tests.bundles.test_resume as resume_hooks"],
        "run": [f"$resume_hooks.record_losses(@train#trainer, {str(losses)!r})", *hooks, *train["run"]],
    }
    path.write_text(json.dumps(overlay), encoding="utf-8")
    return path


def command(bundle: Path, overlay: Path, override: dict) -> list[str]:
    configs = [str(bundle / "configs" / "train.json"), str(bundle / "configs" / "demo.json"), str(overlay)]
    args = cli_args(override)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(configs)]
    return cmd + ["--logging_file", str(bundle / "configs" / "logging.conf"), *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_to_end(cmd: list[str], log: Path) -> str:
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=ENV, timeout=600)
    text = log.read_text(encoding="utf-8", errors="replace")
    assert result.returncode == 0, text[-5000:]
    return text


def run_and_kill(cmd: list[str], marker: Path, log: Path, timeout: float = 600) -> str:
    """Start the run, wait until it writes ``marker`` (it then pauses), SIGKILL it.

    Returns:
        the marker's text.
    """
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        try:
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    text = log.read_text(encoding="utf-8", errors="replace")
                    pytest.fail(
                        f"the run ended (rc {process.returncode}) or timed out before {marker}:\n{text[-5000:]}"
                    )
                time.sleep(0.05)
            time.sleep(0.05)  # the marker is written just before the pause
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=60) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return marker.read_text(encoding="utf-8")


def read_losses(path: Path) -> dict[int, float]:
    losses = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        iteration, value = line.split()
        losses[int(iteration)] = float.fromhex(value)
    return losses


def assert_same_losses(run: dict[int, float], reference: dict[int, float], name: str) -> float:
    """Every loss of ``run`` equals the reference's at that iteration (float tolerance).

    Returns:
        the largest absolute difference.
    """
    differences = [abs(value - reference[i]) for i, value in run.items()]
    for i, value in run.items():
        assert math.isclose(value, reference[i], rel_tol=1e-6, abs_tol=1e-7), (name, i, value, reference[i])
    return max(differences)


def checkpoint_iteration(models: Path) -> int:
    return load_training_checkpoint(models / "checkpoint_last.pt", map_location="cpu")["iteration"]


def equal_state_dicts(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6) for k in sa)


@pytest.mark.slow
def test_killed_runs_resume_exactly(bundle, tmp_path):
    total = EPOCHS * EPOCH_LENGTH
    base = overrides(bundle, tmp_path)

    # R: the uninterrupted run
    ref = {**base, "ckpt_dir": str(tmp_path / "reference"), "output_dir": str(tmp_path / "eval_reference")}
    run_to_end(command(bundle, write_overlay(bundle, tmp_path / "r.json", tmp_path / "r.txt"), ref), tmp_path / "r.log")
    reference = read_losses(tmp_path / "r.txt")
    assert sorted(reference) == list(range(1, total + 1))

    # A: killed with SIGKILL after iteration KILL_AFTER, in the middle of an epoch
    models = tmp_path / "models"
    hook = f"$resume_hooks.pause_after_iteration(@train#trainer, {KILL_AFTER}, {str(tmp_path / 'a')!r})"
    overlay = write_overlay(bundle, tmp_path / "a.json", tmp_path / "a.txt", hook)
    run_and_kill(
        command(bundle, overlay, {**base, "output_dir": str(tmp_path / "eval_a")}), tmp_path / "a", tmp_path / "a.log"
    )
    killed_a = max(read_losses(tmp_path / "a.txt"))
    resumed_b = checkpoint_iteration(models)
    assert killed_a == KILL_AFTER and resumed_b == (KILL_AFTER - 1) // INTERVAL * INTERVAL
    assert killed_a % EPOCH_LENGTH != 0  # mid-epoch

    # B: resumed, then killed while writing its KILL_IN_WRITE-th checkpoint (temporary file written, not renamed)
    hook = f"$resume_hooks.pause_in_checkpoint_write({KILL_IN_WRITE}, {str(tmp_path / 'b')!r})"
    overlay = write_overlay(bundle, tmp_path / "b.json", tmp_path / "b.txt", hook)
    resume = {**base, "output_dir": str(tmp_path / "eval_b"), "resume": "true"}
    in_write = json.loads(run_and_kill(command(bundle, overlay, resume), tmp_path / "b", tmp_path / "b.log"))
    assert "resumed from" in (tmp_path / "b.log").read_text(encoding="utf-8")
    losses_b = read_losses(tmp_path / "b.txt")
    assert min(losses_b) == resumed_b + 1  # continued at the next iteration
    assert Path(in_write["file"]).is_file()  # killed with the temporary file written ...
    resumed_c = checkpoint_iteration(models)  # ... and the previous checkpoint still valid
    assert resumed_c == in_write["iteration"] - INTERVAL

    # C: resumed again, runs to the end
    overlay = write_overlay(bundle, tmp_path / "c.json", tmp_path / "c.txt")
    run_to_end(command(bundle, overlay, {**resume, "output_dir": str(tmp_path / "eval_c")}), tmp_path / "c.log")
    losses_c = read_losses(tmp_path / "c.txt")
    assert sorted(losses_c) == list(range(resumed_c + 1, total + 1))
    final = load_training_checkpoint(models / "checkpoint_last.pt", map_location="cpu")
    assert final["iteration"] == total and final["finished"]

    # the losses after each restart are the uninterrupted run's (the random state came back with the weights)
    first_b = abs(losses_b[resumed_b + 1] - reference[resumed_b + 1])
    first_c = abs(losses_c[resumed_c + 1] - reference[resumed_c + 1])
    worst = max(assert_same_losses(losses_b, reference, "B"), assert_same_losses(losses_c, reference, "C"))
    assert_same_losses(read_losses(tmp_path / "a.txt"), reference, "A")

    # nothing corrupt, nothing left half-written; the best and final models are the uninterrupted run's
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_last.pt", "model.pt", "model_final.pt"]
    for name in ("model.pt", "model_final.pt"):
        assert equal_state_dicts(models / name, tmp_path / "reference" / name), name
    ref_final = load_training_checkpoint(tmp_path / "reference" / "checkpoint_last.pt", map_location="cpu")
    # the validator's best (it picks model.pt) is the uninterrupted run's; the trainer's own key metric (a training
    # Dice averaged over an epoch) is not restored mid-epoch: a run resumed inside an epoch averages that epoch over
    # its remaining iterations only (known limit, see the abdominal card's resume section), so it is not compared
    assert final["engines"]["validator"] == ref_final["engines"]["validator"]
    assert final["key_metric_savers"] == ref_final["key_metric_savers"]

    # resuming the finished run: says so, trains nothing, rewrites nothing, exits 0
    stamps = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
    overlay = write_overlay(bundle, tmp_path / "d.json", tmp_path / "d.txt")
    text = run_to_end(command(bundle, overlay, {**resume, "output_dir": str(tmp_path / "eval_d")}), tmp_path / "d.log")
    assert "training already finished" in text and not (tmp_path / "d.txt").exists()
    assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == stamps

    print(  # the figures, shown with -rA or -s
        f"\n{bundle.name}: {total} iterations; A killed after iteration {killed_a}; B resumed after {resumed_b}, "
        f"killed in the write of the checkpoint after {in_write['iteration']}; C resumed after {resumed_c}, ended "
        f"at {final['iteration']}; first-loss differences {first_b:.3g} (B), {first_c:.3g} (C); largest {worst:.3g}"
    )


# ------------------------------------------------------------------------------------------------------- NaN loss

NAN_AT = 7  # epoch 2, 3 of 4


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_nan_loss_stops_with_the_last_good_checkpoints(bundle, tmp_path):
    configs = bundle / "configs"
    override = {**overrides(bundle, tmp_path), "output_dir": str(tmp_path / "eval"), "checkpoint_interval": 2}
    wf = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "demo.json")],
        logging_file=str(configs / "logging.conf"),
        workflow_type="train",
        **override,
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    network = wf.parser.get_parsed_content("network")
    weights = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def keep(engine):
        weights[engine.state.iteration] = {k: v.detach().clone() for k, v in network.state_dict().items()}

    @trainer.on(Events.ITERATION_STARTED(once=NAN_AT))
    def corrupt(engine):  # a corrupted batch: the loss of this iteration is NaN
        engine.state.batch["image"] = engine.state.batch["image"] * float("nan")

    with pytest.raises(Exception) as info:
        wf.run()
    error = info.value
    while error is not None and not isinstance(error, FloatingPointError):
        error = error.__cause__
    assert isinstance(error, FloatingPointError), info.value
    assert str(error).startswith(
        f"non-finite loss nan at epoch 2, iteration {NAN_AT} (3 of {EPOCH_LENGTH} in the epoch)"
    )
    assert sorted(weights) == list(range(1, NAN_AT))

    def same(state: dict, iteration: int) -> bool:
        """Every entry of ``state`` equals the network's after ``iteration``."""
        return all(torch.equal(v.detach(), weights[iteration][k]) for k, v in state.items())

    models = tmp_path / "models"
    # the NaN never reached the parameters (the failed forward pass did update batch-norm statistics, in memory)
    parameters = dict(network.named_parameters())
    assert same(parameters, NAN_AT - 1)
    checkpoint = load_training_checkpoint(models / "checkpoint_last.pt", map_location="cpu")
    assert checkpoint["iteration"] == NAN_AT - 1 and checkpoint["objects"]["model"].keys() == weights[1].keys()
    assert same(checkpoint["objects"]["model"], NAN_AT - 1)
    best = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert best.keys() == weights[1].keys() and same(best, EPOCH_LENGTH)  # validated after epoch 1, kept since
    assert not (models / "model_final.pt").exists()  # training did not finish
    wf.finalize()
