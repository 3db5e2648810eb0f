"""Tests of common.metrics.summary against hand-computed values and the paper's Tables 1 and 2 (sec. III.B)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.metrics.summary import TOTAL_ROW, format_table, summarize_per_class, total_row

# Roth et al., Table 2 (testing, n=37): class -> (Avg., Std., Min., Max.) in %.
TABLE_2 = {
    "artery": (83.5, 4.1, 73.7, 91.1),
    "vein": (80.5, 6.8, 49.0, 89.4),
    "liver": (97.1, 1.0, 93.5, 98.3),
    "spleen": (97.7, 0.8, 95.2, 98.9),
    "stomach": (96.1, 7.9, 49.4, 98.9),
    "gallbladder": (85.1, 15.7, 28.6, 97.4),
    "pancreas": (84.9, 9.1, 52.5, 95.1),
}
TABLE_2_TOTAL = (89.3, 6.5, 63.1, 95.6)

# Table 1 (training, n=340).
TABLE_1 = {
    "artery": (84.1, 5.0, 66.9, 91.7),
    "vein": (77.5, 8.9, 29.2, 89.2),
    "liver": (96.6, 1.1, 91.4, 98.5),
    "spleen": (96.3, 2.0, 79.8, 98.9),
    "stomach": (95.6, 1.7, 0.0, 99.7),
    "gallbladder": (90.1, 10.9, 0.0, 97.8),
    "pancreas": (85.5, 8.9, 28.0, 95.5),
}
TABLE_1_TOTAL = (89.4, 6.4, 42.2, 95.9)


def _rows(table):
    return {k: dict(zip(("avg", "std", "min", "max"), v, strict=True)) for k, v in table.items()}


def test_summary_hand_computed_with_nan():
    values = np.array([[0.8, 0.5], [0.6, np.nan], [1.0, 0.9]])
    summary = summarize_per_class(values, ["a", "b"])
    assert list(summary) == ["a", "b", TOTAL_ROW]
    # a: mean 0.8; deviations 0, -0.2, 0.2 -> population variance 0.08 / 3
    assert summary["a"]["avg"] == pytest.approx(0.8)
    assert summary["a"]["std"] == pytest.approx(math.sqrt(0.08 / 3))
    assert (summary["a"]["min"], summary["a"]["max"], summary["a"]["n"]) == (pytest.approx(0.6), 1.0, 3)
    # b: NaN case skipped -> values 0.5, 0.9: mean 0.7, population std 0.2
    assert summary["b"]["avg"] == pytest.approx(0.7)
    assert summary["b"]["std"] == pytest.approx(0.2)
    assert (summary["b"]["min"], summary["b"]["max"], summary["b"]["n"]) == (0.5, 0.9, 2)
    total = summary[TOTAL_ROW]
    assert total["avg"] == pytest.approx((0.8 + 0.7) / 2)
    assert total["std"] == pytest.approx((math.sqrt(0.08 / 3) + 0.2) / 2)
    assert total["min"] == pytest.approx((0.6 + 0.5) / 2)
    assert total["max"] == pytest.approx((1.0 + 0.9) / 2)
    assert total["n"] == pytest.approx(2.5)


def test_class_absent_everywhere_is_nan_and_left_out_of_total():
    values = np.array([[0.4, np.nan], [0.6, np.nan]])
    summary = summarize_per_class(values, ["a", "b"])
    assert summary["b"]["n"] == 0 and math.isnan(summary["b"]["avg"]) and math.isnan(summary["b"]["std"])
    assert summary[TOTAL_ROW]["avg"] == pytest.approx(0.5)
    assert summary[TOTAL_ROW]["std"] == pytest.approx(0.1)
    assert "n/a" in format_table(summary)


def test_total_row_reproduces_paper_table_2():
    total = total_row(_rows(TABLE_2))
    got = tuple(round(total[k], 1) for k in ("avg", "std", "min", "max"))
    assert got == TABLE_2_TOTAL


def test_total_row_reproduces_paper_table_1_avg_min_max():
    total = total_row(_rows(TABLE_1))
    assert tuple(round(total[k], 1) for k in ("avg", "min", "max")) == (89.4, 42.2, 95.9)
    # The printed Table 1 std column (5.0, 8.9, 1.1, 2.0, 1.7, 10.9, 8.9) averages to 5.5, not the printed 6.4:
    # one of the printed per-class std values (or the total) must be a typo in the paper.
    assert round(total["std"], 1) == 5.5 != TABLE_1_TOTAL[1]


def test_format_table_paper_layout():
    summary = {**_rows({k: tuple(x / 100 for x in v) for k, v in TABLE_2.items()})}
    summary[TOTAL_ROW] = total_row(summary)
    text = format_table(summary, "TABLE 2: testing (n=37)")
    lines = text.splitlines()
    assert lines[0] == "TABLE 2: testing (n=37)"
    assert lines[1].split() == ["Dice", "(%)", "Avg.", "Std.", "Min.", "Max.", "n"]
    assert lines[2].split()[:5] == ["artery", "83.5%", "4.1%", "73.7%", "91.1%"]
    assert lines[-1].split()[:6] == ["Total", "Avg.", "89.3%", "6.5%", "63.1%", "95.6%"]
    assert "1.3" in format_table({"a": {"avg": 1.26, "std": 0, "min": 1, "max": 2, "n": 1}}, percent=False)


@pytest.mark.parametrize(
    ("values", "names", "match"),
    [
        (np.zeros((3, 2)), ["a"], "2 metric columns but 1 class names"),
        (np.zeros(3), ["a"], "2-D array"),
        (np.zeros((3, 2)), ["a", "a"], "must be unique"),
        (np.zeros((3, 1)), [TOTAL_ROW], "none of them .Total Avg.."),
    ],
)
def test_bad_input(values, names, match):
    """A wrong call is a programming mistake: a plain ValueError, as in MONAI, not the bad-input BundleInputError."""
    with pytest.raises(ValueError, match=match) as info:
        summarize_per_class(values, names)
    assert type(info.value) is ValueError


def test_total_row_of_no_class():
    with pytest.raises(ValueError, match="at least one class row") as info:
        total_row({})
    assert type(info.value) is ValueError
