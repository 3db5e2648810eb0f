"""A data loader that records where each pass over the data starts, so an interrupted pass can be rebuilt."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from common.handlers.random_state import capture_random_state, restore_random_state

__all__ = ["ReplayableLoader"]

logger = logging.getLogger(__name__)


class ReplayableLoader:
    """The trainer's data loader, pass after pass, recording where each pass started and how far it has got.

    Ignite draws batches from ``iter(loader)`` until it is exhausted, then calls ``iter`` again (a new pass: a new
    shuffle, new worker seeds), across epoch boundaries. Each ``iter`` here first captures the random state (the
    one the new pass is drawn from), then counts the batches the engine takes. After :meth:`replay_on_next_pass`,
    the next ``iter`` instead rebuilds the interrupted pass from its recorded start, draws and drops the batches
    the engine had already taken, and sets the random state to that of the interruption.

    Args:
        loader: the data loader (any iterable; ``len`` used when it has one).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.pass_start: dict[str, Any] | None = None
        self.batches = 0
        self._replay: tuple[dict[str, Any], int, dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not yet set (e.g. while unpickling): do not recurse
            raise AttributeError(name)
        return getattr(self.loader, name)

    def pass_length(self) -> int | None:
        """Batches in a full pass.

        Returns:
            ``len(loader)``, or ``None`` when the loader has no length.
        """
        try:
            return len(self.loader)
        except TypeError:
            return None

    def replay_on_next_pass(self, pass_start: dict[str, Any], batches: int, resume_state: dict[str, Any]) -> None:
        """Make the next ``iter`` continue an interrupted pass instead of starting a new one.

        Args:
            pass_start: the random state captured when the interrupted pass began.
            batches: how many batches the engine had taken from it.
            resume_state: the random state at the interruption, set once the batches are dropped.
        """
        self._replay = (pass_start, batches, resume_state)

    def __iter__(self) -> Iterator[Any]:
        replay, self._replay = self._replay, None
        if replay is None:
            self.pass_start, self.batches = capture_random_state(self.loader), 0
            return self._counted(iter(self.loader))
        pass_start, batches, resume_state = replay
        restore_random_state(pass_start, self.loader)
        self.pass_start, self.batches = pass_start, 0
        iterator = iter(self.loader)
        for _ in range(batches):
            if next(iterator, None) is None:
                logger.warning("the interrupted data pass ended after %d of %d batches", self.batches, batches)
                break
            self.batches += 1
        restore_random_state(resume_state, self.loader)
        return self._counted(iterator)

    def _counted(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self.batches += 1
            yield batch
