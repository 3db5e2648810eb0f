"""StagedOutputs: files appear in output_dir only when the run completes."""

import pytest
from ignite.engine import Engine

from common.handlers import StagedOutputs


def _engine(staging, fail_at=None):
    def step(engine, batch):
        (staging / f"case_{batch}.txt").write_text(str(batch))
        if batch == fail_at:
            raise RuntimeError(f"bad case {batch}")

    return Engine(step)


def test_commit_moves_files_on_success(tmp_path):
    staging, out = tmp_path / "out" / ".partial", tmp_path / "out"
    out.mkdir()
    (out / "case_0.txt").write_text("old")
    engine = _engine(staging)
    StagedOutputs(staging, out).attach(engine)
    engine.run([0, 1, 2], max_epochs=1)
    assert sorted(p.name for p in out.iterdir()) == ["case_0.txt", "case_1.txt", "case_2.txt"]
    assert (out / "case_0.txt").read_text() == "0"
    assert not staging.exists()


def test_failure_publishes_nothing_and_keeps_earlier_files(tmp_path):
    staging, out = tmp_path / "out" / ".partial", tmp_path / "out"
    out.mkdir()
    (out / "case_0.txt").write_text("old")
    engine = _engine(staging, fail_at=2)
    StagedOutputs(staging, out).attach(engine)
    with pytest.raises(RuntimeError, match="bad case 2"):
        engine.run([0, 1, 2], max_epochs=1)
    assert sorted(p.name for p in out.iterdir()) == ["case_0.txt"]
    assert (out / "case_0.txt").read_text() == "old"


def test_stale_staging_is_cleared_and_same_dirs_refused(tmp_path):
    staging = tmp_path / "out" / ".partial"
    staging.mkdir(parents=True)
    (staging / "stale.txt").write_text("from a crashed run")
    handler = StagedOutputs(staging, tmp_path / "out")
    handler.start()
    assert list(staging.iterdir()) == []
    with pytest.raises(ValueError, match="must differ"):
        StagedOutputs(tmp_path, tmp_path)


def test_staging_dir_holding_output_dir_is_refused(tmp_path):
    """``start`` empties staging_dir: a staging_dir above output_dir would delete earlier results."""
    with pytest.raises(ValueError, match="staging_dir must not contain output_dir"):
        StagedOutputs(tmp_path, tmp_path / "out")
    StagedOutputs(tmp_path / "out" / ".partial", tmp_path / "out")  # the documented layout is fine


def test_a_failed_run_is_reported_once(tmp_path, caplog):
    """Ignite fires EXCEPTION_RAISED twice for an error inside an iteration; the user reads one line."""
    from ignite.engine import Engine

    def step(engine, batch):
        raise ValueError("bad case")

    engine = Engine(step)
    StagedOutputs(tmp_path / "out" / ".partial", tmp_path / "out").attach(engine)
    with caplog.at_level("ERROR"), pytest.raises(ValueError, match="bad case"):
        engine.run([0], max_epochs=1)
    assert [r.getMessage() for r in caplog.records].count(f"run failed: nothing was written to {tmp_path / 'out'}") == 1
