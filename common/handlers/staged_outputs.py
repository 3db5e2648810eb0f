"""Ignite handler that publishes a run's output files only when the whole run succeeds."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ignite.engine import Engine, Events

__all__ = ["StagedOutputs"]

logger = logging.getLogger(__name__)


class StagedOutputs:
    """Writers put files in ``staging_dir``; on success they move to ``output_dir``, on failure they are deleted.

    Implements BUNDLE_CONTRACT.md "Errors": a run that fails part way (a bad case found while loading, a crash)
    leaves no partial set of label maps, and files already in ``output_dir`` are only replaced by a run that
    completed. Point the writers (e.g. ``SaveImaged(output_dir=...)``) at ``staging_dir`` and list this handler
    first among the engine's handlers, so its clean-up runs before other exception handlers re-raise.

    Args:
        staging_dir: the folder writers write into; emptied at the start of a run. Keep it inside ``output_dir``
            (same file system), e.g. ``<output_dir>/.partial``.
        output_dir: where the files are published, keeping their paths relative to ``staging_dir``.

    Raises:
        ValueError: ``staging_dir`` is ``output_dir`` or contains it.
    """

    def __init__(self, staging_dir: str | os.PathLike, output_dir: str | os.PathLike) -> None:
        self.staging_dir = Path(staging_dir)
        self.output_dir = Path(output_dir)
        staging, output = self.staging_dir.resolve(), self.output_dir.resolve()
        if staging == output:
            raise ValueError(f"staging_dir must differ from output_dir, got {self.staging_dir} for both.")
        if staging in output.parents:
            raise ValueError(
                f"staging_dir must not contain output_dir (a run starts by emptying staging_dir), got staging_dir "
                f"{self.staging_dir} and output_dir {self.output_dir}."
            )
        self._discarded = False

    def attach(self, engine: Engine) -> None:
        """Register :py:meth:`start`, :py:meth:`commit` and :py:meth:`discard` on the engine's events.

        Args:
            engine: the Ignite engine whose run writes the outputs.
        """
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.COMPLETED, self.commit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.discard)

    def start(self, engine: Engine | None = None) -> None:
        """Begin with an empty staging folder (a crashed earlier run may have left one).

        Args:
            engine: the engine (unused; Ignite passes it).
        """
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(parents=True)
        self._discarded = False

    def commit(self, engine: Engine | None = None) -> list[Path]:
        """Move every staged file into ``output_dir`` (``os.replace``: each file appears whole).

        Args:
            engine: the engine (unused; Ignite passes it).

        Returns:
            the published files, in ``output_dir``.
        """
        published = []
        for f in sorted(p for p in self.staging_dir.rglob("*") if p.is_file()):
            target = self.output_dir / f.relative_to(self.staging_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
            published.append(target)
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        logger.info("published %d file(s) in %s", len(published), self.output_dir)
        return published

    def discard(self, engine: Engine | None = None, e: Exception | None = None) -> None:
        """Delete what the failed run staged, then re-raise its error (Ignite expects an exception handler to).

        Args:
            engine: the engine (unused; Ignite passes it).
            e: the run's exception, re-raised unchanged.
        """
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        if not self._discarded:  # Ignite fires EXCEPTION_RAISED twice for an error inside an iteration: say it once
            logger.error("run failed: nothing was written to %s", self.output_dir)
            self._discarded = True
        if e is not None:
            raise e
