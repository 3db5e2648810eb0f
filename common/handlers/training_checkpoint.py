"""A checkpoint from which a training run continues exactly as if it had not stopped, and its Ignite handler.

Training for days on a machine that can be taken away needs three things: a checkpoint that holds everything the
rest of the run depends on, written so that a kill at any moment leaves a valid one, and a way to continue from it
that gives the same iterations the uninterrupted run would have done. :class:`TrainingCheckpoint` does all three
for a MONAI trainer, with :func:`common.handlers.save_atomically` for the writes and
:class:`common.handlers.ReplayableLoader` for the data.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from common.data.switches import as_bool
from common.handlers.atomic_save import partial_path, save_atomically
from common.handlers.random_state import capture_random_state, restore_random_state
from common.handlers.replayable_loader import ReplayableLoader

__all__ = ["CHECKPOINT_FORMAT", "TrainingCheckpoint", "load_training_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
"""Version of the layout :class:`TrainingCheckpoint` writes (the ``"format"`` entry)."""


def load_training_checkpoint(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint written by :class:`TrainingCheckpoint` (``weights_only=True``: tensors and plain data only).

    Args:
        path: the checkpoint file.
        map_location: where its tensors go, as ``torch.load``'s argument (e.g. the run's device).

    Returns:
        the checkpoint's dictionary (see :class:`TrainingCheckpoint` for its entries).

    Raises:
        ValueError: the file is not such a checkpoint, or of a format this code does not read.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path} is not a training checkpoint of format {CHECKPOINT_FORMAT} (found format {found!r}); "
            "it was not written by common.handlers.TrainingCheckpoint, or by another version of it."
        )
    return checkpoint


def _unwrap(obj: Any) -> Any:
    """The module inside ``DistributedDataParallel``/``DataParallel``, so checkpoints hold no ``module.`` prefix.

    Returns:
        the wrapped module, or ``obj`` itself.
    """
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    return obj.module if isinstance(obj, wrappers) else obj


def _first_non_finite(tree: Any, path: str = "") -> str | None:
    """The path of the first floating-point tensor holding NaN or infinity in a nest of dicts and lists.

    Returns:
        the path, or ``None`` when every value is finite.
    """
    if isinstance(tree, torch.Tensor):
        return path if tree.is_floating_point() and not bool(torch.isfinite(tree).all()) else None
    items = tree.items() if isinstance(tree, Mapping) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    for key, value in items:
        found = _first_non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _position(iteration: int, epoch_length: int) -> str:
    """Where an iteration count stands, for the log.

    Returns:
        e.g. ``"iteration 9 (epoch 2, 4 of 5)"``: the last iteration done, its epoch and its place in the epoch.
    """
    if iteration <= 0:
        return "iteration 0"
    epoch = (iteration - 1) // epoch_length + 1
    return f"iteration {iteration} (epoch {epoch}, {iteration - (epoch - 1) * epoch_length} of {epoch_length})"


def _world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) outside one.

    Returns:
        the pair.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TrainingCheckpoint:
    """Ignite handler: a checkpoint to resume a MONAI training run from, and the final model at the end.

    Every ``interval`` iterations (before the next batch is drawn, so after that iteration's validation and
    epoch-end handlers) and when training completes, rank ``save_rank`` writes ``<save_dir>/<filename>`` with
    :func:`save_atomically`, so a kill during a save leaves the previous checkpoint valid. It holds:

    - ``"objects"``: ``state_dict()`` of each entry of ``save_dict`` (the network, the optimizer, the learning-rate
      scheduler, ...; the module inside ``DistributedDataParallel``), plus ``"grad_scaler"`` when the trainer uses
      AMP;
    - ``"iteration"`` (iterations done), ``"epoch"`` (the epoch of the last one), ``"epoch_length"``,
      ``"max_epochs"``, ``"finished"``;
    - ``"engines"``: the ``best_metric`` and ``best_metric_epoch`` of the trainer and of ``validator``;
    - ``"key_metric_savers"``: the list of saved scores of each key-metric ``CheckpointSaver`` among
      ``validator_handlers`` (what decides whether a validation overwrites ``model.pt``);
    - ``"random_state"``: per rank, the state of Python's, NumPy's and PyTorch's (CPU, CUDA) generators and of every
      generator of the training data loader (its sampler's, each random transform's ``R``) now and at the start of
      the current pass over the data, and the number of batches taken from that pass.

    With ``resume`` true, at the start of the run it loads that file (``weights_only=True``, on ``map_location``) and
    restores all of it: the run continues with the next iteration, in the middle of an epoch if that is where the
    checkpoint was written. The data are reproduced through :class:`common.handlers.ReplayableLoader`, which wraps
    ``engine.data_loader``: the interrupted pass over the data is rebuilt from the random state recorded at its
    start (the same shuffle, and the same seeds for the worker processes, which MONAI's ``worker_init_fn`` derives
    from it), the batches already trained on are drawn again and dropped (data loading only, fewer than one pass),
    and then every generator is set to its state at the checkpoint. With ``num_workers=0`` the random transforms
    run in this process, and their generators are among those set, so they go on as they would have; with
    workers, each worker's transforms are re-seeded at the start of every pass and redrawing the pass brings them
    to where they were. The following batches, augmentations and losses are then those of the uninterrupted run
    (the seed of the resumed run does not matter). Resuming a finished run logs so and trains nothing (one given a
    larger ``max_epochs`` continues); resuming without a checkpoint logs a warning and starts a new run, so one
    command line serves the first start and every restart of a pre-emptible job.

    At the end of training it also writes the network's plain ``state_dict`` to ``<save_dir>/<final_filename>``
    (atomically; not when the run stops on an error, so that file is always a finished model).

    What is not restored: the running averages of the interrupted epoch's metrics (the epoch's logged mean loss
    and training Dice cover the iterations after the restart), and the scalars TensorBoard or MLflow already got
    for the iterations redone after the last checkpoint (they are logged again). With ``persistent_workers``, the
    workers' generators carry over between passes and are not captured: a resumed run then differs from the
    uninterrupted one after the first pass; so does a data set whose random transforms draw from an unseeded
    generator of their own. Under ``torch.distributed`` every rank must hold this handler (the random states are
    gathered from all ranks at each save and the ranks check that they resume from the same checkpoint, so on
    several nodes ``save_dir`` must be on a shared file system); a run resumed on another number of ranks restores
    everything but the random state.

    Args:
        save_dir: folder of the checkpoint and the final model.
        save_dict: name -> object with ``state_dict``/``load_state_dict``; must hold the trainer's network and
            optimizer (e.g. ``{"model": "@network", "optimizer": "@optimizer", "lr_scheduler": "@lr_scheduler"}``).
        interval: save every this many iterations (e.g. the epoch length, for once per epoch).
        resume: continue from the checkpoint (a bool, or ``"true"``/``"false"`` as given on the command line).
        validator: the evaluator run by ``ValidationHandler``, whose best metric is kept.
        validator_handlers: the validator's handlers; every MONAI ``CheckpointSaver`` among them that saves on the key
            metric has its record of saved scores kept, so ``model.pt`` stays the best after a restart.
        filename: name of the checkpoint in ``save_dir``.
        final_filename: name of the final model in ``save_dir``; ``None`` for none.
        final_key: the entry of ``save_dict`` written as the final model.
        map_location: where loaded tensors go (e.g. the run's device).
        save_rank: the rank that writes files.

    Raises:
        ValueError: ``interval`` is below 1, ``resume`` is not a switch, ``save_dict`` is empty or
            ``final_key`` is not in it.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        interval: int,
        resume: bool | str = False,
        validator: Engine | None = None,
        validator_handlers: Sequence[Any] = (),
        filename: str = "checkpoint_last.pt",
        final_filename: str | None = "model_final.pt",
        final_key: str = "model",
        map_location: Any = None,
        save_rank: int = 0,
    ) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be a number of iterations >= 1, got {interval!r}.")
        if not save_dict:
            raise ValueError("save_dict must name the objects to save, e.g. the network and the optimizer.")
        if final_filename is not None and final_key not in save_dict:
            raise ValueError(f"final_key {final_key!r} is not an entry of save_dict {sorted(save_dict)}.")
        self.save_dir = Path(save_dir)
        self.path = self.save_dir / filename
        self.final_path = None if final_filename is None else self.save_dir / final_filename
        self.save_dict = dict(save_dict)
        self.final_key = final_key
        self.interval = int(interval)
        self.resume = as_bool(resume, "resume")
        self.validator = validator
        self.key_metric_savers = [
            h
            for h in validator_handlers
            if isinstance(h, CheckpointSaver) and getattr(h, "_key_metric_checkpoint", None) is not None
        ]
        self.map_location = map_location
        self.save_rank = int(save_rank)
        self._passes: ReplayableLoader | None = None
        self._resumed_at: int | None = None
        self._nothing_to_do = False

    def attach(self, engine: Engine) -> None:
        """Register on a MONAI trainer: resume at ``STARTED``, save before batches and at ``COMPLETED``.

        Wraps ``engine.data_loader`` so that each pass over the data is recorded (see the class description).

        Args:
            engine: a MONAI trainer (``SupervisedTrainer``), with a ``data_loader`` and an ``epoch_length``.

        Raises:
            TypeError: the engine has no ``data_loader``.
            ValueError: ``save_dict`` lacks the trainer's network or optimizer.
        """
        if not hasattr(engine, "data_loader"):
            raise TypeError(f"TrainingCheckpoint needs a MONAI trainer (with data_loader), got {type(engine)}.")
        saved = [id(_unwrap(v)) for v in self.save_dict.values()]
        for name in ("network", "optimizer"):
            obj = getattr(engine, name, None)
            if obj is not None and id(_unwrap(obj)) not in saved:
                raise ValueError(
                    f"save_dict must hold the trainer's {name} (a resumed run would start it afresh), "
                    f"got entries {sorted(self.save_dict)}."
                )
        if not isinstance(engine.data_loader, ReplayableLoader):
            engine.data_loader = ReplayableLoader(engine.data_loader)
        self._passes = engine.data_loader
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
            engine.add_event_handler(Events.GET_BATCH_STARTED, self.before_batch)
            engine.add_event_handler(Events.COMPLETED, self.completed)

    # ------------------------------------------------------------------------------------------------- resume

    def started(self, engine: Engine) -> None:
        """At the start of the run: resume from the checkpoint if asked to and it exists.

        Args:
            engine: the trainer at ``STARTED``.

        Raises:
            ValueError: the checkpoint does not fit this run (another epoch length, or beyond ``max_epochs``).
            RuntimeError: under ``torch.distributed``, the ranks found different checkpoints.
        """  # noqa: DOC502 (raised by the helper it calls)
        self._resumed_at, self._nothing_to_do = None, False
        for written in (self.path, self.final_path):
            partial = None if written is None else partial_path(written)
            if partial is not None and partial.exists() and _world()[0] == self.save_rank:
                partial.unlink()
                logger.info("removed %s, left by a save that was interrupted", partial)
        if not self.resume:
            if self.path.exists():
                logger.warning("%s will be overwritten by this new run (add --resume true to continue it)", self.path)
            return
        checkpoint = load_training_checkpoint(self.path, self.map_location) if self.path.exists() else None
        self._check_ranks_agree(None if checkpoint is None else int(checkpoint["iteration"]))
        if checkpoint is None:
            logger.warning("resume: there is no checkpoint %s, so this is a new training run", self.path)
            return
        state = engine.state
        iteration, epoch_length = int(checkpoint["iteration"]), int(checkpoint["epoch_length"])
        if epoch_length != state.epoch_length:
            raise ValueError(
                f"{self.path} was written by a run with epoch_length {epoch_length}, this run has "
                f"{state.epoch_length}: resume with the same epoch_length."
            )
        total = state.max_epochs * state.epoch_length
        if iteration > total:
            raise ValueError(
                f"{self.path} is at iteration {iteration}, beyond this run's {state.max_epochs} epochs of "
                f"{state.epoch_length} iterations ({total}): raise max_epochs to continue it."
            )
        state.iteration, state.epoch = iteration, iteration // epoch_length
        if iteration == total or (checkpoint["finished"] and int(checkpoint["max_epochs"]) == state.max_epochs):
            logger.info(
                "resume: training already finished at %s (%s); nothing to do",
                _position(iteration, epoch_length),
                self.path,
            )
            self._nothing_to_do = True
            engine.terminate()
            return
        self._restore(engine, checkpoint)
        self._resumed_at = iteration
        logger.info(
            "resumed from %s after %s of %d iterations%s",
            self.path,
            _position(iteration, epoch_length),
            total,
            self._best_text(),
        )

    def _check_ranks_agree(self, iteration: int | None) -> None:
        """Under ``torch.distributed``, every rank must resume from the same checkpoint.

        Raises:
            RuntimeError: the ranks found different checkpoints, or some none (``save_dir`` is not on a file system
                that every node shares, or a checkpoint was copied by hand).
        """
        rank, world_size = _world()
        if world_size == 1:
            return
        found: list[Any] = [None] * world_size
        dist.all_gather_object(found, iteration)
        if len(set(found)) > 1:
            raise RuntimeError(
                f"the processes found different checkpoints at {self.path} (iteration per rank, None for none: "
                f"{found}); on several nodes, save_dir must be on a file system they all share."
            )

    def _best_text(self) -> str:
        """What the log says about the best validation so far.

        Returns:
            ``"; best <metric> <value> at epoch <n>"``, or nothing before any validation.
        """
        v = self.validator
        if v is None or getattr(v.state, "best_metric_epoch", -1) < 0:
            return ""
        name = getattr(v.state, "key_metric_name", None) or "metric"
        return f"; best {name} {v.state.best_metric:.4f} at epoch {v.state.best_metric_epoch}"

    def _restore(self, engine: Engine, checkpoint: Mapping[str, Any]) -> None:
        """Load every saved object, the engines' best metrics, the savers' records and the random state.

        Raises:
            ValueError: an object of ``save_dict`` is missing from the checkpoint.
        """
        objects = checkpoint["objects"]
        for name, obj in self._objects(engine).items():
            if name not in objects:
                raise ValueError(f"{self.path} holds {sorted(objects)}, not {name!r}: it cannot resume this run.")
            obj.load_state_dict(objects[name])
        for name, target in (("trainer", engine), ("validator", self.validator)):
            saved = checkpoint["engines"].get(name)
            if target is not None and saved is not None:
                target.state.best_metric = saved["best_metric"]
                target.state.best_metric_epoch = saved["best_metric_epoch"]
        records = checkpoint["key_metric_savers"]
        if len(records) != len(self.key_metric_savers):
            logger.warning(
                "%s records %d key-metric savers, this run has %d: their scores are not restored",
                self.path,
                len(records),
                len(self.key_metric_savers),
            )
        else:
            for saver, saved in zip(self.key_metric_savers, records, strict=True):
                saver.load_state_dict({"_saved": [(p, f) for p, f in saved]})
        rank, world_size = _world()
        states = checkpoint["random_state"]
        if len(states) != world_size:
            logger.warning(
                "%s was written by %d process(es), this run has %d: the random state is not restored, so the "
                "data order and augmentation differ from the interrupted run",
                self.path,
                len(states),
                world_size,
            )
            return
        mine = states[rank]
        missed = restore_random_state(mine["now"], self._passes.loader)
        if missed:
            logger.warning("random state not restored for %s (the data pipeline changed)", missed)
        full = self._passes.pass_length()
        batches = int(mine["pass_batches"])
        if mine["pass_start"] is not None and batches > 0 and (full is None or batches < full):
            logger.info("replaying %d batch(es) of the interrupted pass over the data (loading only)", batches)
            self._passes.replay_on_next_pass(mine["pass_start"], batches, mine["now"])

    # --------------------------------------------------------------------------------------------------- save

    def _objects(self, engine: Engine) -> dict[str, Any]:
        """What goes into ``"objects"``: ``save_dict`` (unwrapped) and the trainer's AMP grad scaler.

        Returns:
            name -> object with ``state_dict``.
        """
        objects = {name: _unwrap(obj) for name, obj in self.save_dict.items()}
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            objects.setdefault("grad_scaler", scaler)
        return objects

    def before_batch(self, engine: Engine) -> None:
        """Save every ``interval`` iterations, once the iteration and its epoch's handlers are done.

        Args:
            engine: the trainer at ``GET_BATCH_STARTED``.
        """
        iteration = engine.state.iteration
        if iteration > 0 and iteration % self.interval == 0 and iteration != self._resumed_at:
            self.save(engine)

    def completed(self, engine: Engine) -> None:
        """At the end of training: the last checkpoint (marked finished) and the final model.

        Args:
            engine: the trainer at ``COMPLETED``.

        Raises:
            FloatingPointError: the network's weights are not finite (nothing is written).
        """
        if self._nothing_to_do:
            return
        self.save(engine, finished=True)
        if self.final_path is None or _world()[0] != self.save_rank:
            return
        weights = _unwrap(self.save_dict[self.final_key]).state_dict()
        bad = _first_non_finite(weights)
        if bad is not None:
            raise FloatingPointError(f"{bad} of the final model is not finite: {self.final_path} not written.")
        save_atomically(weights, self.final_path)
        logger.info("training completed: final model %s", self.final_path)

    def state_dict(self, engine: Engine, finished: bool = False) -> dict[str, Any]:
        """The checkpoint's content now, on this rank (the random state of this rank only).

        Args:
            engine: the trainer.
            finished: whether training has completed.

        Returns:
            the dictionary :meth:`save` writes, with ``"random_state"`` holding this rank's entry alone.
        """
        state = engine.state
        engines = {"trainer": engine}
        if self.validator is not None:
            engines["validator"] = self.validator
        return {
            "format": CHECKPOINT_FORMAT,
            "iteration": int(state.iteration),
            "epoch": int(-(-state.iteration // state.epoch_length)),
            "epoch_length": int(state.epoch_length),
            "max_epochs": int(state.max_epochs),
            "finished": bool(finished),
            "objects": {name: obj.state_dict() for name, obj in self._objects(engine).items()},
            "engines": {
                name: {
                    "best_metric": float(getattr(e.state, "best_metric", -1)),
                    "best_metric_epoch": int(getattr(e.state, "best_metric_epoch", -1)),
                }
                for name, e in engines.items()
            },
            "key_metric_savers": [
                [[float(p), str(f)] for p, f in s._key_metric_checkpoint.state_dict()["_saved"]]
                for s in self.key_metric_savers
            ],
            "random_state": [
                {
                    "now": capture_random_state(self._passes.loader),
                    "pass_start": self._passes.pass_start,
                    "pass_batches": int(self._passes.batches),
                }
            ],
        }

    def save(self, engine: Engine, finished: bool = False) -> Path | None:
        """Write the checkpoint (on rank ``save_rank``; every rank must call this, it gathers their random states).

        Args:
            engine: the trainer.
            finished: whether training has completed.

        Returns:
            the file written, or ``None`` on the other ranks.

        Raises:
            FloatingPointError: a saved tensor holds NaN or infinity; the previous checkpoint is kept.
        """
        checkpoint = self.state_dict(engine, finished)
        bad = _first_non_finite(checkpoint["objects"])
        if bad is not None:
            raise FloatingPointError(
                f"{bad} is not finite after {_position(engine.state.iteration, engine.state.epoch_length)}: not "
                f"saved, {self.path} keeps the last finite state."
            )
        rank, world_size = _world()
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, checkpoint["random_state"][0])
            checkpoint["random_state"] = gathered
        if rank != self.save_rank:
            return None
        save_atomically(checkpoint, self.path)
        logger.info("checkpoint %s after %s", self.path, _position(checkpoint["iteration"], checkpoint["epoch_length"]))
        return self.path
