"""A progress bar with ETA for a MONAI workflow's epochs, configured entirely in a bundle config."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar as IgniteProgressBar

__all__ = ["ProgressBar"]


class ProgressBar(IgniteProgressBar):
    """Ignite's tqdm ``ProgressBar`` whose ``attach`` needs only the engine, as MONAI handlers' do.

    MONAI's workflows attach every handler of a config with ``handler.attach(engine)``; Ignite's bar takes what it
    shows as ``attach`` arguments, which a config cannot pass. Here they are constructor arguments. The bar shows
    ``[iteration/epoch_length]``, the elapsed time and the ETA of the current epoch (of a whole inference run: one
    iteration per case), and clears itself at the end of each epoch, so the log keeps one line per epoch (a
    ``StatsHandler`` with ``iteration_log=False``).

    Args:
        output_transform: ``engine.state.output -> value or dict`` shown beside the bar, e.g. the loss.
        metric_names: names of ``engine.state.metrics`` to show, or ``"all"``.
        desc: text before the bar, e.g. ``"train"``.
        persist: keep each finished bar on screen.
        tqdm_kwargs: passed to ``tqdm`` (e.g. ``mininterval``).
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] | None = None,
        metric_names: str | Sequence[str] | None = None,
        desc: str | None = None,
        persist: bool = False,
        **tqdm_kwargs: Any,
    ) -> None:
        if desc is not None:
            tqdm_kwargs["desc"] = desc
        super().__init__(persist=persist, **tqdm_kwargs)
        self.output_transform = output_transform
        self.metric_names = metric_names

    def attach(self, engine: Engine, *args: Any, **kwargs: Any) -> None:
        """Show the bar on ``engine``'s iterations, with the constructor's output and metrics.

        Args:
            engine: a MONAI trainer or evaluator.
            args: further positional arguments of Ignite's ``ProgressBar.attach`` (event names).
            kwargs: further keyword arguments of Ignite's ``ProgressBar.attach``.
        """
        kwargs.setdefault("metric_names", self.metric_names)
        kwargs.setdefault("output_transform", self.output_transform)
        # before Ignite's own epoch-end handler closes (and clears) the bar: show its final state, which tqdm's
        # refresh interval skips when the last iterations come faster than 0.1 s (a quick inference run)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._show_final_state)
        super().attach(engine, *args, **kwargs)

    def _show_final_state(self, engine: Engine) -> None:
        if self.pbar is not None:
            self.pbar.refresh()
