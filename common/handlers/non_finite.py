"""Stop training with an error naming the epoch and iteration as soon as the loss or the weights stop being finite."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

__all__ = ["StopOnNonFinite"]


class StopOnNonFinite:
    """Ignite handler: raise ``FloatingPointError`` on a NaN or infinite loss, before it reaches the weights.

    On a MONAI trainer it checks the loss at ``IterationEvents.LOSS_COMPLETED``, after the forward pass and before
    the backward pass and the optimizer step, so the network keeps the parameters of the previous iteration (the
    running statistics of its normalisation layers did see the failed forward pass); with
    ``check_weights`` it also checks every parameter at ``IterationEvents.MODEL_COMPLETED``, right after the step
    (a finite loss can still give non-finite gradients or an overflowing update). The error stops the run before
    any handler of that iteration or epoch runs, so no checkpoint is written from non-finite weights: the
    checkpoints on disk stay those of the last good state (with :class:`common.handlers.TrainingCheckpoint`, which
    writes nothing on an error, and MONAI's key-metric ``CheckpointSaver``, which saves only after a validation).

    Ignite's ``TerminateOnNan`` is not used: it checks after the optimizer step, and ends the run quietly as if it
    had completed (so ``COMPLETED`` handlers save the broken weights as the final model, and the exit code is 0).
    On an engine without MONAI's iteration events the loss is checked at ``ITERATION_COMPLETED``, after the step.
    Under ``torch.distributed`` the ranks agree (one all-reduce of a flag per iteration): a non-finite loss on one
    rank stops every rank, instead of leaving the others waiting in the gradient all-reduce.

    Args:
        loss_key: key of the loss in ``engine.state.output``.
        check_weights: also check the parameters of ``engine.network`` after each optimizer step (one reduction
            per parameter tensor and one device synchronisation per iteration).
    """

    def __init__(self, loss_key: str = "loss", check_weights: bool = True) -> None:
        self.loss_key = loss_key
        self.check_weights = bool(check_weights)

    def attach(self, engine: Engine) -> None:
        """Register the checks on the trainer's iteration events.

        Args:
            engine: a MONAI trainer (or any Ignite engine whose output holds the loss).
        """
        try:
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self.check_loss)
        except ValueError:  # not a MONAI workflow: its events are not registered
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_loss)
            return
        if self.check_weights:
            engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self.check_parameters)

    @staticmethod
    def _where(engine: Engine) -> str:
        """The position of the current iteration, for the message.

        Returns:
            ``"epoch E, iteration I (i of L in the epoch)"``.
        """
        state = engine.state
        text = f"epoch {state.epoch}, iteration {state.iteration}"
        if state.epoch_length:
            text += f" ({(state.iteration - 1) % state.epoch_length + 1} of {state.epoch_length} in the epoch)"
        return text

    def _loss(self, engine: Engine) -> Any:
        """The loss in the engine's output (a dict, or the first dict of a decollated list).

        Returns:
            the loss value, or ``None`` when the output holds none.
        """
        output = engine.state.output
        if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
            output = output[0]
        return output.get(self.loss_key) if isinstance(output, dict) else None

    def check_loss(self, engine: Engine) -> None:
        """Raise when the iteration's loss is NaN or infinite.

        Args:
            engine: the trainer, after the loss was computed.

        Raises:
            FloatingPointError: the loss is not finite; the message names the epoch, the iteration and the value.
        """
        loss = self._loss(engine)
        if loss is None:
            return
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        what = f"non-finite loss {value}"
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = loss.device if isinstance(loss, torch.Tensor) else torch.device("cpu")
            flags = torch.zeros(dist.get_world_size(), device=device)
            flags[dist.get_rank()] = 0.0 if math.isfinite(value) else 1.0
            dist.all_reduce(flags)
            bad_ranks = [r for r, flag in enumerate(flags.tolist()) if flag > 0]
            if not bad_ranks:
                return
            if math.isfinite(value):
                what = f"non-finite loss on rank(s) {bad_ranks} (this is rank {dist.get_rank()}, loss {value})"
            else:
                what += f" on rank {dist.get_rank()} (non-finite on rank(s) {bad_ranks})"
        elif math.isfinite(value):
            return
        before_step = engine.has_event_handler(self.check_loss, IterationEvents.LOSS_COMPLETED)
        raise FloatingPointError(
            f"{what} at {self._where(engine)}: training stopped "
            + (
                f"before the optimizer step, so the parameters are those after iteration {engine.state.iteration - 1}"
                if before_step
                else "after the optimizer step"
            )
            + ". The checkpoints on disk are those of the last finite state. Check the learning rate and the input "
            "intensities; a resumed run repeats the same iterations with the same data, so change something first."
        )

    def check_parameters(self, engine: Engine) -> None:
        """Raise when a parameter of ``engine.network`` holds NaN or infinity after the optimizer step.

        Args:
            engine: the trainer, after the optimizer step.

        Raises:
            FloatingPointError: a parameter is not finite; the message names it, the epoch, the iteration and the
                iteration's loss.
        """
        network = getattr(engine, "network", None)
        if network is None:
            return
        params = [(n, p) for n, p in network.named_parameters() if p.is_floating_point()]
        if not params or bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            return
        name = next(n for n, p in params if not bool(torch.isfinite(p).all()))
        loss = self._loss(engine)
        loss_text = f"{float(loss.detach().float().mean()):.6g}" if isinstance(loss, torch.Tensor) else str(loss)
        raise FloatingPointError(
            f"non-finite weights ({name}) after the optimizer step at {self._where(engine)}, with a finite loss "
            f"{loss_text} (an exploding update: check the learning rate). The checkpoints on disk are those of the "
            "last finite state."
        )
