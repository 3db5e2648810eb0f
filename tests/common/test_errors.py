"""BundleInputError and find_bundle_input_error, which live together in common.data.errors."""

import pickle

import pytest

import common.data
import common.data.checks
from common.data.errors import BundleInputError, find_bundle_input_error


def _bad_label():
    return BundleInputError("/data/case_1_seg.nii.gz", "label values {9}", "label values in {0, 1, 2}")


def test_message_fields_and_pickling():
    err = _bad_label()
    assert str(err) == "/data/case_1_seg.nii.gz: found label values {9}; expected label values in {0, 1, 2}"
    assert isinstance(err, ValueError)
    assert (err.path, err.found, err.expected) == (
        "/data/case_1_seg.nii.gz",
        "label values {9}",
        "label values in {0, 1, 2}",
    )
    assert str(BundleInputError(None, "entry 0 without 'image'", "'image' in every entry")) == (
        "found entry 0 without 'image'; expected 'image' in every entry"
    )
    back = pickle.loads(pickle.dumps(err))  # crosses DataLoader worker and torchrun process boundaries
    assert type(back) is BundleInputError and str(back) == str(err) and back.path == err.path


def test_find_bundle_input_error_lives_in_errors():
    assert find_bundle_input_error.__module__ == "common.data.errors"
    assert common.data.find_bundle_input_error is find_bundle_input_error
    assert common.data.BundleInputError is BundleInputError
    assert not hasattr(common.data.checks, "find_bundle_input_error")


def _raise_from(outer, inner):
    """Raise ``outer`` from ``inner`` (sets ``__cause__``) and return it, as caught."""
    try:
        raise outer from inner
    except Exception as e:  # the test inspects whatever was raised
        return e


def test_follows_cause():
    err = _bad_label()
    once = _raise_from(RuntimeError("applying transform <CheckLabelValuesd>"), err)
    twice = _raise_from(RuntimeError("applying transform <Compose>"), once)
    assert twice.__cause__ is once and once.__cause__ is err
    assert find_bundle_input_error(twice) is err
    assert find_bundle_input_error(err) is err


def test_follows_context():
    err = _bad_label()
    try:
        try:
            raise err
        except BundleInputError:
            raise KeyError("during handling")  # noqa: B904 - implicit chaining is what is tested
    except KeyError as e:
        wrapped = e
    assert wrapped.__cause__ is None and wrapped.__context__ is err
    assert find_bundle_input_error(wrapped) is err


def test_context_is_searched_when_the_cause_leads_elsewhere():
    err = _bad_label()
    try:
        try:
            raise err
        except BundleInputError:
            raise RuntimeError("Failed to instantiate") from OSError("unrelated")
    except RuntimeError as e:
        wrapped = e
    assert isinstance(wrapped.__cause__, OSError) and wrapped.__context__ is err
    assert find_bundle_input_error(wrapped) is err


def test_nearest_error_wins_and_cycles_end():
    inner = _bad_label()
    outer = BundleInputError("/data/t2.nii.gz", "spatial shape (8, 9, 11)", "the spatial shape (8, 9, 10)")
    assert find_bundle_input_error(_raise_from(RuntimeError("wrap"), _raise_from(outer, inner))) is outer
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert find_bundle_input_error(a) is None
    assert find_bundle_input_error(RuntimeError("unrelated")) is None
    assert find_bundle_input_error(None) is None


@pytest.mark.parametrize("n_wraps", [1, 5])
def test_deep_chains(n_wraps):
    err = _bad_label()
    exc = err
    for i in range(n_wraps):
        exc = _raise_from(RuntimeError(f"wrap {i}"), exc)
    assert find_bundle_input_error(exc) is err
