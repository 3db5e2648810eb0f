"""common.handlers.TrainingCheckpoint on a toy MONAI trainer: a run stopped anywhere and resumed gives the same
iterations as the uninterrupted run (losses, weights, best metric, model.pt tracking), for 0 and 2 workers."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointSaver, MeanSquaredError, ValidationHandler, from_engine
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from monai.utils import set_determinism

from common.handlers import TrainingCheckpoint, load_training_checkpoint
from common.handlers.atomic_save import partial_path

N_CASES, BATCH, EPOCH_LENGTH, EPOCHS = 7, 2, 5, 3  # 3 batches a pass: passes straddle epochs
TOTAL = EPOCH_LENGTH * EPOCHS


class Killed(Exception):
    """Stands for the process being killed (the subprocess test in tests/bundles kills a real one)."""


def toy_run(
    ckpt_dir: Path, resume=False, stop_after: int | None = None, num_workers: int = 0, interval: int = 2, seed=0
):
    """Build a fresh trainer (as a new process would) and train; stop after `stop_after` iterations if given.

    Returns:
        (losses by iteration, trainer, validator, network, checkpoint handler).
    """
    g = torch.Generator().manual_seed(42)  # the data set, the same whatever the seed
    data = [
        {"image": torch.rand(1, 6, 6, generator=g), "label": torch.rand(1, 6, 6, generator=g)} for _ in range(N_CASES)
    ]
    set_determinism(seed)
    train_tf = Compose([RandGaussianNoised(keys="image", prob=1.0, std=0.3), RandFlipd(["image", "label"], 0.5, 0)])
    loader = DataLoader(
        Dataset(data, train_tf), batch_size=BATCH, shuffle=True, drop_last=True, num_workers=num_workers
    )
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    saver = CheckpointSaver(
        str(ckpt_dir),
        {"model": net},
        save_key_metric=True,
        key_metric_filename="model.pt",
        key_metric_negative_sign=True,
    )
    validator = SupervisedEvaluator(
        device="cpu",
        val_data_loader=DataLoader(Dataset(data[:3]), batch_size=1),
        network=net,
        key_val_metric={"val_mse": MeanSquaredError(output_transform=from_engine(["pred", "label"]))},
        metric_cmp_fn=lambda current, best: current < best,
        val_handlers=[saver],
    )
    checkpoint = TrainingCheckpoint(
        ckpt_dir,
        {"model": net, "optimizer": opt},
        interval=interval,
        resume=resume,
        validator=validator,
        validator_handlers=[saver],
        map_location="cpu",
    )
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=EPOCHS,
        epoch_length=EPOCH_LENGTH,
        train_data_loader=loader,
        network=net,
        optimizer=opt,
        loss_function=torch.nn.MSELoss(),
        train_handlers=[ValidationHandler(validator=validator, interval=1), checkpoint],
    )
    losses: dict[int, float] = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.__setitem__(e.state.iteration, float(e.state.output[0]["loss"]))
    )
    if stop_after is not None:

        def kill(_):
            raise Killed

        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_after), kill)
    with contextlib.suppress(Killed):
        trainer.run()
    return losses, trainer, validator, net, checkpoint, saver


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    result = {}
    for workers in (0, 2):
        folder = tmp_path_factory.mktemp(f"reference{workers}")
        losses, trainer, validator, net, _, saver = toy_run(folder, num_workers=workers)
        result[workers] = {
            "losses": losses,
            "weights": {k: v.clone() for k, v in net.state_dict().items()},
            "best": (validator.state.best_metric, validator.state.best_metric_epoch),
            "saved": list(saver._key_metric_checkpoint._saved),
            "model.pt": torch.load(folder / "model.pt", map_location="cpu", weights_only=True),
        }
    return result


@pytest.mark.parametrize(
    ("workers", "stop_after", "interval"),
    [
        (0, 9, 2),  # checkpoint after iteration 8: mid-epoch (3 of 5), mid-pass (2 of 3 batches)
        (0, 11, 2),  # after 10: the end of epoch 2 (after its validation), mid-pass
        (0, 7, 3),  # after 6: a pass boundary, mid-epoch
        (2, 9, 2),  # worker processes: the interrupted pass is redrawn through them
    ],
)
def test_resumed_run_equals_uninterrupted_run(tmp_path, uninterrupted, workers, stop_after, interval, caplog):
    reference = uninterrupted[workers]
    killed, *_ = toy_run(tmp_path, stop_after=stop_after, num_workers=workers, interval=interval)
    assert max(killed) == stop_after
    saved_at = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")["iteration"]
    assert saved_at == (stop_after - 1) // interval * interval
    with caplog.at_level(logging.INFO):
        losses, trainer, validator, net, _, saver = toy_run(
            tmp_path, resume="true", num_workers=workers, interval=interval, seed=123
        )
    assert f"after iteration {saved_at} (epoch" in caplog.text
    # training continued at the next iteration and ended at exactly the configured count
    assert sorted(losses) == list(range(saved_at + 1, TOTAL + 1))
    assert trainer.state.iteration == TOTAL and trainer.state.epoch == EPOCHS
    # every loss after the restart is the uninterrupted run's: same batches, augmentation, weights, optimizer
    assert {i: reference["losses"][i] for i in losses} == losses
    assert all(torch.equal(reference["weights"][k], v) for k, v in net.state_dict().items())
    # best-metric tracking went on: same best, same record of model.pt, so model.pt is the same best model
    assert (validator.state.best_metric, validator.state.best_metric_epoch) == reference["best"]
    assert list(saver._key_metric_checkpoint._saved) == reference["saved"]
    model = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(reference["model.pt"][k], v) for k, v in model.items())
    final = torch.load(tmp_path / "model_final.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(reference["weights"][k], v) for k, v in final.items())
    last = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")
    assert last["iteration"] == TOTAL and last["finished"] and last["epoch"] == EPOCHS


def test_checkpoint_contents(tmp_path):
    toy_run(tmp_path, stop_after=5)
    checkpoint = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")
    assert checkpoint["iteration"] == 4 and checkpoint["epoch"] == 1 and checkpoint["epoch_length"] == EPOCH_LENGTH
    assert checkpoint["max_epochs"] == EPOCHS and not checkpoint["finished"]
    assert set(checkpoint["objects"]) == {"model", "optimizer"}
    assert checkpoint["objects"]["optimizer"]["state"][0]["step"] == 4
    assert set(checkpoint["engines"]) == {"trainer", "validator"}
    assert checkpoint["key_metric_savers"] == [[]]  # no validation yet
    (rank0,) = checkpoint["random_state"]
    assert rank0["pass_batches"] == 1  # iteration 4 is the first batch of the second pass of 3
    assert {"python", "numpy", "torch", "generators"} <= set(rank0["now"]) and rank0["pass_start"] is not None
    assert not (tmp_path / "model_final.pt").exists()  # only a completed run writes the final model


def test_finished_run_resumes_to_nothing(tmp_path, caplog):
    toy_run(tmp_path)
    final = tmp_path / "model_final.pt"
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with caplog.at_level(logging.INFO):
        losses, trainer, *_ = toy_run(tmp_path, resume=True)
    assert losses == {} and trainer.state.iteration == TOTAL
    assert "training already finished at iteration 15 (epoch 3, 5 of 5)" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps  # nothing rewritten
    assert final.is_file()


def test_resume_without_checkpoint_starts_a_new_run_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        losses, *_ = toy_run(tmp_path, resume=True)
    assert "there is no checkpoint" in caplog.text and str(tmp_path / "checkpoint_last.pt") in caplog.text
    assert sorted(losses) == list(range(1, TOTAL + 1))


def test_new_run_warns_before_replacing_a_checkpoint_and_removes_a_partial_one(tmp_path, caplog):
    toy_run(tmp_path, stop_after=3)
    partial_path(tmp_path / "checkpoint_last.pt").write_bytes(b"torn")
    with caplog.at_level(logging.INFO):
        toy_run(tmp_path, stop_after=1)
    assert "will be overwritten by this new run" in caplog.text and "interrupted" in caplog.text
    assert not partial_path(tmp_path / "checkpoint_last.pt").exists()


def test_checkpoint_of_another_epoch_length_is_refused(tmp_path):
    toy_run(tmp_path, stop_after=3)
    checkpoint = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")
    checkpoint["epoch_length"] = 4
    torch.save(checkpoint, tmp_path / "checkpoint_last.pt")
    with pytest.raises(ValueError, match="epoch_length 4, this run has 5"):
        toy_run(tmp_path, resume=True)


def test_non_finite_weights_are_not_saved(tmp_path):
    _, trainer, _, net, checkpoint, _ = toy_run(tmp_path, stop_after=3)  # saved after iteration 2
    before = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] = float("nan")
    trainer.state.iteration = 4
    with pytest.raises(
        FloatingPointError, match=r"model.0.weight is not finite after iteration 4 \(epoch 1, 4 of 5\): not saved"
    ):
        checkpoint.save(trainer)
    after = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")
    assert after["iteration"] == before["iteration"] == 2
    assert torch.equal(after["objects"]["model"]["0.weight"], before["objects"]["model"]["0.weight"])


def test_arguments_are_checked(tmp_path):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="interval"):
        TrainingCheckpoint(tmp_path, {"model": net}, interval=0)
    with pytest.raises(ValueError, match="resume must be true or false .*got 'ture'"):
        TrainingCheckpoint(tmp_path, {"model": net}, interval=1, resume="ture")
    with pytest.raises(ValueError, match="final_key 'net'"):
        TrainingCheckpoint(tmp_path, {"model": net}, interval=1, final_key="net")
    assert TrainingCheckpoint(tmp_path, {"model": net}, interval=1, resume="False").resume is False
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=[{"image": torch.zeros(1, 2), "label": torch.zeros(1, 2)}],
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
    )
    with pytest.raises(ValueError, match="must hold the trainer's optimizer"):
        TrainingCheckpoint(tmp_path, {"model": net}, interval=1).attach(trainer)


def _resume_on_rank(rank: int, folder: str) -> None:
    """Rank 0 sees a checkpoint, rank 1 (another node's disk) does not; each rank writes how its start ended."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    net = torch.nn.Linear(2, 2)
    handler = TrainingCheckpoint(Path(folder, "models" if rank == 0 else "elsewhere"), {"model": net}, 1, resume=True)
    try:
        handler.started(SimpleNamespace(state=None))
        ended = "started"
    except RuntimeError as error:
        ended = str(error)
    Path(folder, f"rank{rank}.txt").write_text(ended)
    dist.barrier()
    dist.destroy_process_group()


def test_ranks_that_see_different_checkpoints_refuse_to_resume(tmp_path):
    toy_run(tmp_path / "models", stop_after=3)
    mp.spawn(_resume_on_rank, args=(str(tmp_path),), nprocs=2, join=True)
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert "found different checkpoints" in text and "[2, None]" in text and "all share" in text, text
