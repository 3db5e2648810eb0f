"""Property tests (hypothesis) of the losses, metrics and summaries the bundles run, built as their configs build them.

Losses and metrics are listed in two registries, :data:`LOSSES` and :data:`METRICS`; each entry names the
properties it must have, and every property test runs on each entry that claims it. A new bundle adds one line per
loss or measure, built from its own config so the test checks what the bundle runs, e.g.::

    LossCase("hand_mri_jaccard", loss_from_config(HAND / "train.json"), LOSS_PROPERTIES),
    MetricCase(
        "hand_mri_mean_iou",
        metric_from_config(HAND / "train.json", metric_id="validate#key_metric#val_mean_iou",
                           postprocessing_id="validate#postprocessing"),
        METRIC_PROPERTIES,
        reference=iou_reference,  # an independent implementation, written in this file like dice_reference
    ),

leaving out a property the measure does not have (a weighted loss is not invariant to relabelling; a loss pooled
over the batch is not a sum over volumes) and saying why in a comment. Conventions: a loss takes the network's
logits ``[B, C, *spatial]`` and the label map ``[B, 1, *spatial]`` (as MONAI losses with ``to_onehot_y`` do); a
metric is fed through the bundle's validation post-processing (softmax, argmax, one-hot) and returns per-case,
per-class values ``[B, n_reported_classes]`` as its handler's ``save_details`` keeps them. Tests that no case claims
fail (:func:`test_every_property_is_claimed`), so none is silently skipped.

The summary of per-case values (``common.metrics.summary``) is one function and is tested directly: bounds, NaN
handling against an independent implementation, invariance to the order of cases, and the total row as the mean of
the class rows. Settings come from the ``ci`` profile in ``tests/conftest.py`` (derandomized, no deadline).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from monai.bundle import ConfigParser

from common.metrics.summary import SUMMARY_COLUMNS, TOTAL_ROW, summarize_per_class, total_row

ABDOMINAL = Path("bundles/abdominal_ct_multiorgan_segmentation/configs")
MARGIN = 30.0  # logit margin of a confident prediction: softmax leaves at most ~e^-30 on the other classes

LOSS_PROPERTIES = frozenset(
    {"bounds", "perfect", "disjoint", "label_permutation", "voxel_permutation", "spatial_symmetry", "per_volume_sum"}
)
METRIC_PROPERTIES = frozenset(
    {
        "bounds",
        "nan_iff_absent",
        "perfect",
        "disjoint",
        "symmetric",
        "label_permutation",
        "voxel_permutation",
        "spatial_symmetry",
        "matches_reference",
    }
)


# ------------------------------------------------------------------------------------------------------ registries


@dataclass(frozen=True)
class Built:
    """A loss or metric ready to call, and the label values it scores (``counted``) among ``n_classes``."""

    fn: Callable
    n_classes: int
    counted: tuple[int, ...]


@dataclass(frozen=True)
class LossCase:
    """One loss under test.

    Args:
        name: the test id.
        build: returns the :class:`Built` loss, ``fn(logits, labels) -> scalar tensor``.
        properties: the names in :data:`LOSS_PROPERTIES` it must have.
        per_volume: the loss adds up one value per volume (MONAI ``batch=False``); ``False`` when it pools the
            whole batch (``batch=True``), which changes what ``bounds`` and ``disjoint`` expect.
    """

    name: str
    build: Callable[[], Built]
    properties: frozenset[str]
    per_volume: bool = True


@dataclass(frozen=True)
class MetricCase:
    """One per-case, per-class measure under test.

    Args:
        name: the test id.
        build: returns the :class:`Built` metric, ``fn(pred_labels, ref_labels) -> [B, len(counted)]`` array.
        properties: the names in :data:`METRIC_PROPERTIES` it must have.
        reference: an independent implementation, ``(pred_mask, ref_mask) -> value`` for one case and class,
            for ``matches_reference``.
    """

    name: str
    build: Callable[[], Built]
    properties: frozenset[str]
    reference: Callable[[np.ndarray, np.ndarray], float] | None = None


def _parser(files: Sequence[Path]) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser


def loss_from_config(*files: Path, loss_id: str = "loss") -> Callable[[], Built]:
    """The loss a bundle trains with, from its config files (overlays last), built once."""

    @functools.cache
    def build() -> Built:
        parser = _parser(files)
        loss = parser.get_parsed_content(loss_id)
        n_classes = int(parser["num_classes"])
        first = 0 if getattr(loss, "include_background", True) else 1
        return Built(fn=loss, n_classes=n_classes, counted=tuple(range(first, n_classes)))

    return build


def metric_from_config(*files: Path, metric_id: str, postprocessing_id: str) -> Callable[[], Built]:
    """A MONAI metric handler of a bundle's config, fed through the config's post-processing as the evaluator does.

    The predicted label map becomes confident logits (``MARGIN`` on the predicted class), then each case goes
    through ``postprocessing_id`` (softmax, argmax, one-hot for ``pred``; one-hot for ``label``), and the handler's
    ``metric_fn`` scores the batch: the per-case, per-class values ``save_details`` keeps.
    """

    @functools.cache
    def build() -> Built:
        parser = _parser(files)
        handler = parser.get_parsed_content(metric_id)
        post = parser.get_parsed_content(postprocessing_id)
        n_classes = int(parser["num_classes"])
        metric = handler.metric_fn
        first = 0 if metric.include_background else 1

        def compute(pred_labels: np.ndarray, ref_labels: np.ndarray) -> np.ndarray:
            cases = []
            for pred, ref in zip(pred_labels, ref_labels, strict=True):
                logits = MARGIN * _one_hot(pred[0], n_classes)
                cases.append(post({"pred": torch.as_tensor(logits), "label": torch.as_tensor(ref, dtype=torch.float)}))
            metric.reset()
            values = metric(y_pred=torch.stack([c["pred"] for c in cases]), y=torch.stack([c["label"] for c in cases]))
            return np.asarray(values, dtype=np.float64)

        return Built(fn=compute, n_classes=n_classes, counted=tuple(range(first, n_classes)))

    return build


def dice_reference(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice 2|P & R| / (|P| + |R|) of two boolean masks; NaN when the reference is empty (MONAI's ``ignore_empty``)."""
    if not ref.any():
        return math.nan
    return 2.0 * np.logical_and(pred, ref).sum() / (pred.sum() + ref.sum())


LOSSES = [
    LossCase("abdominal_dice", loss_from_config(ABDOMINAL / "train.json"), LOSS_PROPERTIES),
    LossCase(
        "abdominal_dice_linear_denominator",
        loss_from_config(ABDOMINAL / "train.json", ABDOMINAL / "variants/dice_loss_linear_denominator.json"),
        LOSS_PROPERTIES,
    ),
    # pooled over the mini-batch on purpose (the paper's other reading): not a sum of per-volume losses
    LossCase(
        "abdominal_dice_whole_batch",
        loss_from_config(ABDOMINAL / "train.json", ABDOMINAL / "variants/dice_loss_whole_batch.json"),
        LOSS_PROPERTIES - {"per_volume_sum"},
        per_volume=False,
    ),
]
METRICS = [
    MetricCase(
        "abdominal_mean_dice",
        metric_from_config(
            ABDOMINAL / "train.json",
            metric_id="validate#key_metric#val_mean_dice",
            postprocessing_id="validate#postprocessing",
        ),
        METRIC_PROPERTIES,
        reference=dice_reference,
    ),
]


def _claiming(cases: Sequence, prop: str) -> list:
    return [pytest.param(c, id=c.name) for c in cases if prop in c.properties]


def test_every_property_is_claimed():
    """A property no case claims would leave its test with no parameters (skipped, not run)."""
    assert set().union(*(c.properties for c in LOSSES)) == LOSS_PROPERTIES
    assert set().union(*(c.properties for c in METRICS)) == METRIC_PROPERTIES
    assert all(c.reference is not None for c in METRICS if "matches_reference" in c.properties)


# ------------------------------------------------------------------------------------------------------ strategies


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``[*spatial]`` integer labels -> ``[n_classes, *spatial]`` float32 one-hot."""
    return (np.arange(n_classes).reshape(-1, *[1] * labels.ndim) == labels[None]).astype(np.float32)


def _confident(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Logits ``[B, C, *spatial]`` that predict ``labels`` ``[B, 1, *spatial]`` with probability ~1."""
    return torch.as_tensor(np.stack([MARGIN * _one_hot(b[0], n_classes) for b in labels]))


@st.composite
def label_maps(draw, n_classes: int, batch: tuple[int, int] = (1, 2), side: tuple[int, int] = (1, 4)) -> np.ndarray:
    """Integer label maps ``[B, 1, X, Y, Z]`` with values in ``[0, n_classes)``."""
    shape = (draw(st.integers(*batch)), 1, *draw(st.tuples(*[st.integers(*side)] * 3)))
    return draw(hnp.arrays(np.int64, shape, elements=st.integers(0, n_classes - 1)))


@st.composite
def label_pairs(draw, n_classes: int, batch: tuple[int, int] = (1, 2)) -> tuple[np.ndarray, np.ndarray]:
    """A prediction and a reference label map ``[B, 1, X, Y, Z]`` of the same size, drawn independently."""
    pred = draw(label_maps(n_classes, batch=batch))
    return pred, draw(hnp.arrays(np.int64, pred.shape, elements=st.integers(0, n_classes - 1)))


@st.composite
def logits_and_labels(draw, n_classes: int, batch: tuple[int, int] = (1, 2)) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, C, X, Y, Z]`` (any values in [-10, 10]) and label maps ``[B, 1, X, Y, Z]`` of the same size."""
    labels = draw(label_maps(n_classes, batch=batch))
    logits_shape = (labels.shape[0], n_classes, *labels.shape[2:])
    logits = draw(hnp.arrays(np.float32, logits_shape, elements=st.floats(-10, 10, width=32)))
    return torch.as_tensor(logits), torch.as_tensor(labels, dtype=torch.float)


def _relabel(counted: Sequence[int], n_classes: int):
    """Strategy: a lookup table that permutes the ``counted`` label values among themselves, fixing the rest."""

    def table(order: list[int]) -> np.ndarray:
        lut = np.arange(n_classes)
        lut[list(counted)] = order
        return lut

    return st.permutations(list(counted)).map(table)


spatial_symmetries = st.tuples(st.permutations([0, 1, 2]), st.tuples(*[st.booleans()] * 3))
"""An axis order and flips of the three spatial axes."""


def _apply_symmetry(array: np.ndarray | torch.Tensor, symmetry) -> np.ndarray:
    """Transpose and flip the spatial axes (2, 3, 4) of ``[B, C, X, Y, Z]``."""
    order, flips = symmetry
    out = np.transpose(np.asarray(array), (0, 1, *(2 + a for a in order)))
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=2 + axis)
    return out.copy()  # a fresh C-ordered array: torch refuses negative strides


def _apply_voxel_permutation(array: np.ndarray | torch.Tensor, seed: int) -> np.ndarray:
    """The same permutation of the voxels of every ``[B, C]`` slice (shape kept)."""
    a = np.asarray(array)
    flat = a.reshape(*a.shape[:2], -1)
    order = np.random.default_rng(seed).permutation(flat.shape[-1])
    return flat[..., order].reshape(a.shape).copy()


def _loss(case: LossCase, logits, labels) -> float:
    return float(case.build().fn(torch.as_tensor(logits), torch.as_tensor(labels, dtype=torch.float)))


def _present(labels: np.ndarray, counted: Sequence[int], per_volume: bool) -> int:
    """How many (volume, class) pairs, or classes when pooled over the batch, hold a counted label value."""
    groups = list(labels) if per_volume else [labels]
    return sum(int(np.isin(c, g)) for g in groups for c in counted)


# --------------------------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("case", _claiming(LOSSES, "bounds"))
@given(data=st.data())
def test_loss_bounds(case, data):
    """Each per-class term is in [0, 1]: 0 <= loss <= n_classes per volume (or per batch when pooled)."""
    built = case.build()
    logits, labels = data.draw(logits_and_labels(built.n_classes))
    terms = len(built.counted) * (labels.shape[0] if case.per_volume else 1)
    value = _loss(case, logits, labels)
    assert -1e-6 <= value <= terms + 1e-6


@pytest.mark.parametrize("case", _claiming(LOSSES, "perfect"))
@given(data=st.data())
def test_loss_perfect_prediction_is_zero(case, data):
    built = case.build()
    labels = data.draw(label_maps(built.n_classes)).astype(np.float32)
    assert _loss(case, _confident(labels, built.n_classes), labels) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("case", _claiming(LOSSES, "disjoint"))
@given(data=st.data())
def test_loss_disjoint_prediction_counts_the_classes_present(case, data):
    """No voxel right: every class present in prediction or reference costs ~1 (1 - smoothing / (n + smoothing)),
    an absent one 0; with every class present the loss is ~n_classes per volume."""
    built = case.build()
    labels = data.draw(label_maps(built.n_classes, side=(2, 4)))
    labels.reshape(labels.shape[0], -1)[:, : built.n_classes] = np.arange(built.n_classes)  # every class present
    shift = data.draw(st.integers(1, built.n_classes - 1))
    predicted = (labels + shift) % built.n_classes
    expected = _present(labels, built.counted, case.per_volume)  # the prediction holds the same classes
    assert expected == len(built.counted) * (labels.shape[0] if case.per_volume else 1)
    value = _loss(case, _confident(predicted, built.n_classes), labels)
    assert value == pytest.approx(expected, abs=1e-3)
    # and with some classes absent from both, only the present ones cost
    sparse = data.draw(label_maps(built.n_classes))
    value = _loss(case, _confident((sparse + shift) % built.n_classes, built.n_classes), sparse)
    both = np.concatenate([sparse, (sparse + shift) % built.n_classes], axis=1)
    assert value == pytest.approx(_present(both, built.counted, case.per_volume), abs=1e-3)


@pytest.mark.parametrize("case", _claiming(LOSSES, "label_permutation"))
@given(data=st.data())
def test_loss_invariant_to_relabelling(case, data):
    """Permuting label values in the reference and the prediction's channels alike changes nothing."""
    built = case.build()
    logits, labels = data.draw(logits_and_labels(built.n_classes))
    lut = data.draw(_relabel(built.counted, built.n_classes))
    relabelled = lut[np.asarray(labels, dtype=np.int64)]
    permuted_logits = torch.empty_like(logits)
    permuted_logits[:, torch.as_tensor(lut)] = logits  # channel c moves to lut[c]
    assert _loss(case, permuted_logits, relabelled) == pytest.approx(_loss(case, logits, labels), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("case", _claiming(LOSSES, "spatial_symmetry"))
@given(data=st.data(), symmetry=spatial_symmetries)
def test_loss_invariant_to_flips_and_axis_order(case, data, symmetry):
    built = case.build()
    logits, labels = data.draw(logits_and_labels(built.n_classes))
    moved = _loss(case, _apply_symmetry(logits, symmetry), _apply_symmetry(labels, symmetry))
    assert moved == pytest.approx(_loss(case, logits, labels), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("case", _claiming(LOSSES, "voxel_permutation"))
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_loss_invariant_to_voxel_order(case, data, seed):
    built = case.build()
    logits, labels = data.draw(logits_and_labels(built.n_classes))
    moved = _loss(case, _apply_voxel_permutation(logits, seed), _apply_voxel_permutation(labels, seed))
    assert moved == pytest.approx(_loss(case, logits, labels), rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("case", _claiming(LOSSES, "per_volume_sum"))
@given(data=st.data())
def test_loss_of_a_batch_is_the_sum_over_its_volumes(case, data):
    """Paper II.C: Dice per image volume. A batch of two costs the sum of each; their order does not matter."""
    built = case.build()
    logits, labels = data.draw(logits_and_labels(built.n_classes, batch=(2, 2)))
    first, second = (logits[:1], labels[:1]), (logits[1:], labels[1:])
    both = _loss(case, torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]]))
    swapped = _loss(case, torch.cat([second[0], first[0]]), torch.cat([second[1], first[1]]))
    separate = _loss(case, *first) + _loss(case, *second)
    assert both == pytest.approx(separate, rel=1e-4, abs=1e-5)
    assert swapped == pytest.approx(both, rel=1e-4, abs=1e-5)


# -------------------------------------------------------------------------------------------------------- metrics


def _metric(case: MetricCase, pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return case.build().fn(np.asarray(pred), np.asarray(ref))


def _absent(ref: np.ndarray, counted: Sequence[int]) -> np.ndarray:
    """``[B, len(counted)]``: True where the class is absent from the case's reference."""
    return np.array([[not np.isin(c, r) for c in counted] for r in ref])


@pytest.mark.parametrize("case", _claiming(METRICS, "bounds"))
@given(data=st.data())
def test_metric_bounds(case, data):
    built = case.build()
    pred, ref = data.draw(label_pairs(built.n_classes))
    values = _metric(case, pred, ref)
    assert values.shape == (pred.shape[0], len(built.counted))
    finite = values[~np.isnan(values)]
    assert np.all((finite >= 0) & (finite <= 1 + 1e-6))


@pytest.mark.parametrize("case", _claiming(METRICS, "nan_iff_absent"))
@given(data=st.data())
def test_metric_is_nan_exactly_where_the_reference_lacks_the_class(case, data):
    """MONAI's ignore_empty: a class absent from the reference is left out (NaN), whatever the prediction."""
    built = case.build()
    pred, ref = data.draw(label_pairs(built.n_classes))
    np.testing.assert_array_equal(np.isnan(_metric(case, pred, ref)), _absent(ref, built.counted))


@pytest.mark.parametrize("case", _claiming(METRICS, "perfect"))
@given(data=st.data())
def test_metric_perfect_prediction_is_one(case, data):
    built = case.build()
    ref = data.draw(label_maps(built.n_classes))
    values = _metric(case, ref, ref)
    present = ~_absent(ref, built.counted)
    np.testing.assert_allclose(values[present], 1.0, atol=1e-6)


@pytest.mark.parametrize("case", _claiming(METRICS, "disjoint"))
@given(data=st.data())
def test_metric_disjoint_prediction_is_zero(case, data):
    built = case.build()
    ref = data.draw(label_maps(built.n_classes))
    pred = (ref + data.draw(st.integers(1, built.n_classes - 1))) % built.n_classes
    values = _metric(case, pred, ref)
    present = ~_absent(ref, built.counted)
    np.testing.assert_allclose(values[present], 0.0, atol=1e-6)


@pytest.mark.parametrize("case", _claiming(METRICS, "symmetric"))
@given(data=st.data())
def test_metric_symmetric_in_prediction_and_reference(case, data):
    """Equal where both hold the class. Where only one does, MONAI's ignore_empty makes it asymmetric: 0 when the
    reference holds it (a miss), NaN when only the prediction does (left out) -- a false positive in a case without
    that organ does not lower the mean Dice."""
    built = case.build()
    a, b = data.draw(label_pairs(built.n_classes))
    ab, ba = _metric(case, a, b), _metric(case, b, a)
    in_both = ~_absent(a, built.counted) & ~_absent(b, built.counted)
    np.testing.assert_allclose(ab[in_both], ba[in_both], rtol=1e-6, atol=1e-7)
    only_in_b = _absent(a, built.counted) & ~_absent(b, built.counted)
    assert np.all(ab[only_in_b] == 0) and np.all(np.isnan(ba[only_in_b]))


@pytest.mark.parametrize("case", _claiming(METRICS, "label_permutation"))
@given(data=st.data())
def test_metric_follows_a_relabelling(case, data):
    """Relabelling both maps permutes the per-class values the same way."""
    built = case.build()
    pred, ref = data.draw(label_pairs(built.n_classes))
    lut = data.draw(_relabel(built.counted, built.n_classes))
    before, after = _metric(case, pred, ref), _metric(case, lut[pred], lut[ref])
    column = {c: i for i, c in enumerate(built.counted)}
    moved = np.empty_like(before)
    for c in built.counted:
        moved[:, column[lut[c]]] = before[:, column[c]]
    np.testing.assert_allclose(after, moved, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", _claiming(METRICS, "spatial_symmetry"))
@given(data=st.data(), symmetry=spatial_symmetries)
def test_metric_invariant_to_flips_and_axis_order(case, data, symmetry):
    built = case.build()
    pred, ref = data.draw(label_pairs(built.n_classes))
    moved = _metric(case, _apply_symmetry(pred, symmetry), _apply_symmetry(ref, symmetry))
    np.testing.assert_allclose(moved, _metric(case, pred, ref), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", _claiming(METRICS, "voxel_permutation"))
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_metric_invariant_to_voxel_order(case, data, seed):
    built = case.build()
    pred, ref = data.draw(label_pairs(built.n_classes))
    moved = _metric(case, _apply_voxel_permutation(pred, seed), _apply_voxel_permutation(ref, seed))
    np.testing.assert_allclose(moved, _metric(case, pred, ref), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", _claiming(METRICS, "matches_reference"))
@given(data=st.data())
def test_metric_matches_an_independent_implementation(case, data):
    built = case.build()
    pred, ref = data.draw(label_pairs(built.n_classes))
    expected = np.array(
        [[case.reference(p == c, r == c) for c in built.counted] for p, r in zip(pred, ref, strict=True)]
    )
    np.testing.assert_allclose(_metric(case, pred, ref), expected, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------------- summaries

per_case_values = st.integers(1, 5).flatmap(
    lambda n_classes: hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 8), st.just(n_classes)),
        elements=st.one_of(st.floats(0, 1), st.just(math.nan)),
    )
)
"""``[n_cases, n_classes]`` per-case values in [0, 1] (e.g. Dice), NaN where a class was absent."""


def _names(values: np.ndarray) -> list[str]:
    return [f"class {i}" for i in range(values.shape[1])]


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _rows_close(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(_close(float(got[k]), float(want[k])) for k in want)


@given(values=per_case_values)
def test_summary_matches_an_independent_implementation(values):
    """Each class row from Python's statistics module, NaN cases dropped for that class only."""
    summary = summarize_per_class(values, _names(values))
    assert list(summary) == [*_names(values), TOTAL_ROW]
    for name, column in zip(_names(values), values.T, strict=True):
        valid = [float(v) for v in column if not math.isnan(v)]
        if valid:
            want = {
                "avg": statistics.fmean(valid),
                "std": statistics.pstdev(valid),
                "min": min(valid),
                "max": max(valid),
                "n": len(valid),
            }
        else:
            want = {"avg": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
        assert _rows_close(summary[name], want), (name, summary[name], want)


@given(values=per_case_values)
def test_summary_bounds(values):
    """Dice in [0, 1] gives rows with 0 <= min <= avg <= max <= 1 and 0 <= std <= (max - min) / 2."""
    summary = summarize_per_class(values, _names(values))
    for name, row in summary.items():
        if math.isnan(row["avg"]):
            assert name != TOTAL_ROW or all(math.isnan(r["avg"]) for r in summary.values())
            continue
        assert 0 <= row["min"] <= row["avg"] + 1e-12 and row["avg"] <= row["max"] + 1e-12 and row["max"] <= 1
        assert 0 <= row["std"] <= (row["max"] - row["min"]) / 2 + 1e-12
        assert 0 < row["n"] <= values.shape[0]


@given(values=per_case_values, data=st.data())
def test_summary_invariant_to_the_order_of_cases(values, data):
    order = data.draw(st.permutations(range(values.shape[0])))
    names = _names(values)
    before, after = summarize_per_class(values, names), summarize_per_class(values[order], names)
    assert all(_rows_close(after[k], before[k]) for k in before)


@given(values=per_case_values, data=st.data())
def test_summary_follows_the_order_of_classes(values, data):
    order = data.draw(st.permutations(range(values.shape[1])))
    names = _names(values)
    before = summarize_per_class(values, names)
    after = summarize_per_class(values[:, order], [names[i] for i in order])
    assert all(_rows_close(after[k], before[k]) for k in before)


@given(values=per_case_values)
def test_total_row_is_the_mean_of_the_class_rows(values):
    """Each column of "Total Avg." is the mean over classes of that column, classes with NaN there skipped."""
    summary = summarize_per_class(values, _names(values))
    rows = [summary[name] for name in _names(values)]
    for key in SUMMARY_COLUMNS:
        valid = [float(r[key]) for r in rows if not math.isnan(r[key])]
        want = statistics.fmean(valid) if valid else math.nan
        assert _close(float(summary[TOTAL_ROW][key]), want), key
    assert _rows_close(total_row(dict(zip(_names(values), rows, strict=True))), summary[TOTAL_ROW])


@settings(max_examples=10)
@given(values=per_case_values)
def test_summary_does_not_change_its_input(values):
    copy = values.copy()
    summarize_per_class(values, _names(values))
    np.testing.assert_array_equal(values, copy)
