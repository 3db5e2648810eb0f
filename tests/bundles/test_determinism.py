"""Determinism, for every bundle: two CPU trainings with the same ``seed`` give the same first losses, bit for bit,
and another seed gives other losses (the seed reaches the sampling and the augmentation)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ignite.engine import Events
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.conftest import fast_overrides

ITERATIONS = 3


def first_losses(bundle: Path, data: Path, out: Path, seed: int) -> list[float]:
    """Train the bundle's demo for ITERATIONS iterations with ``seed`` (no validation) and return the losses."""
    configs = bundle / "configs"
    files = [str(configs / "train.json"), str(configs / "demo.json")]
    parser = ConfigParser()
    parser.read_config(files)
    batch_size = int(parser.get_parsed_content("train#dataloader#batch_size"))
    wf = ConfigWorkflow(
        config_file=files,
        logging_file=str(configs / "logging.conf"),
        workflow_type="train",
        dataset_dir=str(data),
        ckpt_dir=str(out / "models"),
        output_dir=str(out / "eval"),
        phantom_n_train=batch_size + 1,  # a different draw of cases at each shuffle
        phantom_n_validation=1,
        phantom_n_test=1,
        **{"train#trainer#max_epochs": 1, "train#trainer#epoch_length": ITERATIONS},
        val_interval=ITERATIONS + 1,  # no validation in this epoch
        num_workers=0,
        seed=seed,
        **fast_overrides(bundle),
    )
    wf.initialize()
    trainer = wf.parser.get_parsed_content("train#trainer")
    losses: list[float] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        output = engine.state.output
        losses.append(float(output[0]["loss"] if isinstance(output, list) else output["loss"]))

    wf.run()
    wf.finalize()
    return losses


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_same_seed_same_losses_other_seed_other_losses(bundle, tmp_path):
    data = tmp_path / "data"
    first = first_losses(bundle, data, tmp_path / "a", seed=0)
    again = first_losses(bundle, data, tmp_path / "b", seed=0)
    other = first_losses(bundle, data, tmp_path / "c", seed=1)
    assert len(first) == ITERATIONS
    assert first == again  # exactly
    assert all(a != b for a, b in zip(first, other, strict=True)), (first, other)
