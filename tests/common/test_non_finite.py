"""common.handlers.StopOnNonFinite: a NaN/infinite loss or weight stops training with an error saying where, and no
checkpoint is written from the broken state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer

from common.handlers import StopOnNonFinite, TrainingCheckpoint, load_training_checkpoint


class LossBecomesNaN(torch.nn.Module):
    """MSE, times NaN from the `at`-th call on."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss * float("nan") if self.calls >= self.at else loss


def toy_trainer(tmp_path, loss, handlers=()):
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = [{"image": torch.rand(2, 4), "label": torch.rand(2, 4)} for _ in range(3)]
    checkpoint = TrainingCheckpoint(tmp_path, {"model": net, "optimizer": opt}, interval=2, map_location="cpu")
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=3,
        epoch_length=3,
        train_data_loader=data,
        network=net,
        optimizer=opt,
        loss_function=loss,
        train_handlers=[StopOnNonFinite(), *handlers, checkpoint],
    )
    weights = {}
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: weights.__setitem__(e.state.iteration, net.weight.detach().clone())
    )
    return trainer, net, weights


def test_nan_loss_stops_before_the_step_and_names_epoch_and_iteration(tmp_path):
    trainer, net, weights = toy_trainer(tmp_path, LossBecomesNaN(at=5))
    with pytest.raises(FloatingPointError) as info:
        trainer.run()
    message = str(info.value)
    assert message.startswith("non-finite loss nan at epoch 2, iteration 5 (2 of 3 in the epoch)")
    assert "before the optimizer step, so the parameters are those after iteration 4" in message
    assert torch.equal(net.weight, weights[4])  # the NaN never reached the weights
    # the checkpoint on disk is the last one before the failure (after iteration 4), finite; no final model
    checkpoint = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")
    assert checkpoint["iteration"] == 4 and not checkpoint["finished"]
    assert torch.equal(checkpoint["objects"]["model"]["weight"], weights[4])
    assert not (tmp_path / "model_final.pt").exists()


def test_infinite_update_stops_right_after_the_step(tmp_path):
    def explode(engine):
        engine.optimizer.param_groups[0]["lr"] = math.inf

    trainer, net, weights = toy_trainer(tmp_path, torch.nn.MSELoss())
    trainer.add_event_handler(Events.ITERATION_STARTED(once=3), explode)
    with pytest.raises(
        FloatingPointError, match=r"non-finite weights \(weight\) after the optimizer step at epoch 1, "
    ):
        trainer.run()
    assert sorted(weights) == [1, 2]  # iteration 3 never completed: no handler saw the weights
    checkpoint = load_training_checkpoint(tmp_path / "checkpoint_last.pt", map_location="cpu")
    assert checkpoint["iteration"] == 2 and torch.equal(checkpoint["objects"]["model"]["weight"], weights[2])
    assert not (tmp_path / "model_final.pt").exists()


def test_finite_run_is_untouched(tmp_path):
    trainer, _, weights = toy_trainer(tmp_path, torch.nn.MSELoss())
    trainer.run()
    assert sorted(weights) == list(range(1, 10))
    assert (tmp_path / "model_final.pt").is_file()


def test_plain_ignite_engine_is_checked_after_the_iteration():
    engine = Engine(lambda e, batch: {"loss": torch.tensor(batch)})
    StopOnNonFinite().attach(engine)
    with pytest.raises(
        FloatingPointError, match=r"non-finite loss inf at epoch 1, iteration 2 \(2 of 3 in the epoch\)"
    ):
        engine.run([1.0, float("inf"), 2.0], max_epochs=1)


def _one_rank_sees_nan(rank: int, folder: str) -> None:
    """Rank 0's second loss is NaN, rank 1's never is; each rank writes how its run ended."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    engine = Engine(lambda e, batch: {"loss": torch.tensor(math.nan if rank == 0 and batch == 1 else 1.0)})
    StopOnNonFinite().attach(engine)
    try:
        engine.run([0, 1, 2], max_epochs=1)
        ended = "completed"
    except FloatingPointError as error:
        ended = str(error)
    Path(folder, f"rank{rank}.txt").write_text(ended)
    dist.barrier()
    dist.destroy_process_group()


def test_ranks_stop_together_when_one_loss_is_nan(tmp_path):
    """Under DDP a rank that stopped alone would leave the others waiting in the gradient all-reduce."""
    mp.spawn(_one_rank_sees_nan, args=(str(tmp_path),), nprocs=2, join=True)
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in (0, 1))
    assert rank0.startswith("non-finite loss nan on rank 0 (non-finite on rank(s) [0]) at epoch 1, iteration 2 (2 of 3")
    assert rank1.startswith("non-finite loss on rank(s) [0] (this is rank 1, loss 1.0) at epoch 1, iteration 2 (2 of 3")
