"""Tests of the modality figure: plot_channel_overlays on hand-made planes (axes, titles, what each panel shows) and
the ChannelOverlays handler, on hand-made engine outputs (which slice it takes) and on a real MONAI
SupervisedEvaluator (the PNG it writes)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

from common.handlers import ChannelOverlays
from common.visualize import ChannelOverlaySlice, percentile_window, plot_channel_overlays, to_radiological
from tests.common.test_visualize import label_pixels, png_pixels

MODALITIES = ["T1", "T2", "T1C", "FLAIR"]
CLASSES = {"1": "necrosis", "2": "edema", "3": "non-enhancing", "4": "enhancing"}
T1C = 2
RED = np.array([1.0, 0.0, 0.0])


def _plane(name: str, shape=(6, 5), seed: int = 0) -> ChannelOverlaySlice:
    """Four channels of distinct intensity ranges (channel c in [10 c, 10 c + 1)), labels 1 and 2 in two corners."""
    rng = np.random.default_rng(seed)
    channels = np.stack([10.0 * c + rng.random(shape) for c in range(4)])
    reference = np.zeros(shape, np.int64)
    reference[:2, :2] = 1
    prediction = np.zeros(shape, np.int64)
    prediction[-2:, -2:] = 2
    return ChannelOverlaySlice(name, channels, reference, prediction, (seed,), 2)


# --- plot_channel_overlays ------------------------------------------------------------------------------------------


def test_figure_has_a_row_per_case_and_a_column_per_modality_plus_two():
    cases = [_plane(f"case_{i}", seed=i) for i in range(3)]
    fig = plot_channel_overlays(cases, MODALITIES, {1: "necrosis", 2: "edema"}, overlay_channel=T1C, title="BraTS")

    assert len(fig.axes) == 3 * (4 + 2)
    titles = [ax.get_title() for ax in fig.axes[:6]]
    assert titles == ["T1", "T2", "T1C", "FLAIR", "reference on T1C", "prediction on T1C"]
    assert all(ax.get_title() == "" for ax in fig.axes[6:])  # headings on the first row only
    assert [fig.axes[6 * r].get_ylabel() for r in range(3)] == [f"case_{r}\naxial slice z={r}" for r in range(3)]
    assert fig._suptitle.get_text() == "BraTS"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["1: necrosis", "2: edema"]


def test_each_panel_shows_its_channel_in_its_own_window_and_labels_over_the_chosen_channel():
    case = _plane("a")
    fig = plot_channel_overlays([case], MODALITIES, {1: "necrosis", 2: "edema"}, overlay_channel=T1C)
    for col, channel in enumerate([0, 1, 2, 3, T1C, T1C]):
        grey = fig.axes[col].get_images()[0]
        np.testing.assert_array_equal(grey.get_array(), to_radiological(case.channels[channel]))
        assert grey.get_clim() == pytest.approx(np.percentile(case.channels[channel], [1, 99]))
    assert [len(ax.get_images()) for ax in fig.axes] == [1, 1, 1, 1, 2, 2]  # labels only in the last two
    reference_drawn = fig.axes[4].get_images()[1].get_array()
    prediction_drawn = fig.axes[5].get_images()[1].get_array()
    np.testing.assert_array_equal(reference_drawn.filled(0), to_radiological(case.reference))
    np.testing.assert_array_equal(prediction_drawn.filled(0), to_radiological(case.prediction))


def test_overlay_channel_counts_from_the_end_and_must_exist():
    case = _plane("a")
    fig = plot_channel_overlays([case], MODALITIES, {1: "necrosis"}, overlay_channel=-1)
    assert fig.axes[4].get_title() == "reference on FLAIR"
    np.testing.assert_array_equal(fig.axes[5].get_images()[0].get_array(), to_radiological(case.channels[3]))
    with pytest.raises(ValueError, match="not one of the 4 channels"):
        plot_channel_overlays([case], MODALITIES, {1: "necrosis"}, overlay_channel=4)


def test_label_colours_replace_the_fixed_ones():
    case = _plane("a", shape=(8, 8))
    rgb = png_pixels(plot_channel_overlays([case], MODALITIES, {1: "necrosis"}, label_colours={1: "red"}))
    assert label_pixels(rgb, RED).sum() > 500  # the 2x2 of 8x8 corner of a ~270 px panel: ~4500 px
    rgb = png_pixels(plot_channel_overlays([case], MODALITIES, {1: "necrosis"}))
    assert label_pixels(rgb, RED).sum() < 50  # tab10 blue instead (only stray anti-aliased text pixels)


def test_percentile_window_ignores_outliers_and_non_finite_values():
    plane = np.concatenate([np.linspace(0.0, 1.0, 1001), [1e6, np.nan, np.inf]])
    low, high = percentile_window(plane)
    assert low == pytest.approx(np.percentile(np.concatenate([np.linspace(0, 1, 1001), [1e6]]), 1))
    assert high < 2.0
    assert percentile_window(np.full(3, np.nan)) == (0.0, 1.0)


def test_plot_channel_overlays_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        plot_channel_overlays([], MODALITIES, {1: "a"})
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        plot_channel_overlays([_plane("a")], MODALITIES[:3], {1: "a"})
    bad = _plane("a")
    bad.prediction = bad.prediction[:, :4]
    with pytest.raises(ValueError, match="reference and prediction") as info:
        plot_channel_overlays([bad], MODALITIES, {1: "a"})
    assert type(info.value) is ValueError
    with pytest.raises(ValueError, match="values > 0"):
        plot_channel_overlays([_plane("a")], MODALITIES, {1: "a"}, label_colours={0: "red"})


# --- ChannelOverlays on hand-made engine outputs --------------------------------------------------------------------

SPATIAL = (8, 7, 6)


def _volume_case(largest_z: int, smaller_z: int, name: str) -> dict:
    """Image [4, 8, 7, 6] with channel c, slice z holding 100 c + z; reference 12 voxels at largest_z, 4 at smaller_z.

    The prediction (one-hot over 5 classes) is the reference's labels moved to label 2 everywhere.
    """
    x, y, z = SPATIAL
    image = np.broadcast_to((100.0 * np.arange(4)[:, None] + np.arange(z)[None, :])[:, None, None, :], (4, x, y, z))
    label = np.zeros(SPATIAL, np.int64)
    label[1:4, 1:5, largest_z] = 4  # 12 voxels
    label[5:7, 2:4, smaller_z] = 1  # 4 voxels
    pred = np.where(label > 0, 2, 0)
    one_hot = np.moveaxis(np.eye(5, dtype=np.float32)[pred], -1, 0)
    return {
        "image": MetaTensor(torch.tensor(image.copy(), dtype=torch.float32), meta={"filename_or_obj": name}),
        "label": torch.tensor(label[None], dtype=torch.float32),
        "pred": torch.tensor(one_hot),
    }


def _engine(outputs: list[dict], batch: list[dict] | None = None) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(output=outputs, batch=outputs if batch is None else batch))


def test_the_plane_is_the_axial_slice_with_the_largest_reference(tmp_path):
    handler = ChannelOverlays(tmp_path, MODALITIES, CLASSES, overlay_channel=T1C)
    handler._started(None)
    handler.iteration_completed(_engine([_volume_case(4, 1, "/data/brats/p0.nii.gz"), _volume_case(0, 5, "p1")]))

    first, second = handler._cases
    assert (first.name, first.index, first.axis) == ("p0.nii.gz", (4,), 2)  # not the middle slice z=3
    assert (second.name, second.index) == ("p1", (0,))
    np.testing.assert_array_equal(first.channels, np.broadcast_to((100.0 * np.arange(4) + 4)[:, None, None], (4, 8, 7)))
    expected_reference = np.zeros((8, 7), np.int64)
    expected_reference[1:4, 1:5] = 4
    np.testing.assert_array_equal(first.reference, expected_reference)
    np.testing.assert_array_equal(first.prediction, np.where(expected_reference > 0, 2, 0))  # one-hot argmax-ed


def test_n_cases_holds_within_one_iteration_and_across_iterations(tmp_path):
    handler = ChannelOverlays(tmp_path, MODALITIES, CLASSES, n_cases=2)
    handler.iteration_completed(_engine([_volume_case(4, 1, "p0")]))
    handler.iteration_completed(_engine([_volume_case(3, 1, "p1"), _volume_case(2, 1, "p2")]))
    handler.iteration_completed(_engine([_volume_case(1, 2, "p3")]))
    assert [c.name for c in handler._cases] == ["p0", "p1"]


def test_the_image_may_come_from_the_batch_and_a_missing_one_is_an_error(tmp_path):
    case = _volume_case(2, 3, "p0")
    output = {k: v for k, v in case.items() if k != "image"}
    handler = ChannelOverlays(tmp_path, MODALITIES, CLASSES)
    handler.iteration_completed(_engine([output], batch=[case]))
    assert handler._cases[0].channels.shape == (4, 8, 7)
    assert handler._cases[0].name == "p0"

    handler = ChannelOverlays(tmp_path, MODALITIES, CLASSES)
    with pytest.raises(ValueError, match="no 'image'"):
        handler.iteration_completed(_engine([output], batch=[output]))
    with pytest.raises(ValueError, match=r"engine output holds \['image', 'label'\]"):
        handler.iteration_completed(_engine([{"image": case["image"], "label": case["label"]}]))


def test_an_image_with_other_channels_is_an_error(tmp_path):
    handler = ChannelOverlays(tmp_path, MODALITIES[:3], CLASSES)
    with pytest.raises(ValueError, match=r"must be \(3, 8, 7, 6\)"):
        handler.iteration_completed(_engine([_volume_case(2, 3, "p0")]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channel_names": []}, "one name per image channel"),
        ({"overlay_channel": 4}, "not one of the 4 channels"),
        ({"n_cases": 0}, "n_cases"),
        ({"save_rank": -1}, "save_rank"),
        ({"label_colours": {"0": "red"}}, "values > 0"),
    ],
)
def test_handler_rejects_bad_settings(tmp_path, kwargs, match):
    settings = {"channel_names": MODALITIES, "class_names": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=match):
        ChannelOverlays(tmp_path, **settings)


# --- ChannelOverlays on a real SupervisedEvaluator ------------------------------------------------------------------


class TumourFromFlair(torch.nn.Module):
    """A "network" whose output is known: edema (label 2) where FLAIR (channel 3) is above 0.5, else background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edema = (x[:, 3] > 0.5).long() * 2
        return torch.nn.functional.one_hot(edema, 5).permute(0, 4, 1, 2, 3).float()


def _evaluator(handler: ChannelOverlays, batch_size: int = 1) -> SupervisedEvaluator:
    rng = np.random.default_rng(0)
    data = []
    for i in range(2):
        image = rng.random((4, 16, 16, 8)).astype(np.float32)
        label = np.zeros((1, 16, 16, 8), np.float32)
        label[0, 4:12, 4:12, 3 + i] = 2
        label[0, 6:8, 6:8, 3 + i] = 1
        data.append(
            {
                "image": MetaTensor(torch.from_numpy(image), meta={"filename_or_obj": f"/data/brats/case_{i}.nii.gz"}),
                "label": MetaTensor(torch.from_numpy(label), meta={"filename_or_obj": f"/data/brats/seg_{i}.nii.gz"}),
            }
        )
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=batch_size, num_workers=0),
        network=TumourFromFlair(),
        val_handlers=[handler],
    )


def test_evaluator_writes_one_wide_png(tmp_path):
    out = tmp_path / "eval"
    handler = ChannelOverlays(out, MODALITIES, CLASSES, overlay_channel=T1C, prefix="test_", n_cases=4)
    evaluator = _evaluator(handler, batch_size=2)
    evaluator.run()

    assert os.listdir(out) == ["test_modalities.png"]  # no temporary file left behind
    path = out / "test_modalities.png"
    assert path.stat().st_size > 0
    rgb = imread(path)
    assert rgb.shape[1] > rgb.shape[0]  # 6 columns, 2 rows
    assert [c.name for c in handler._cases] == ["case_0.nii.gz", "case_1.nii.gz"]
    assert [c.index for c in handler._cases] == [(3,), (4,)]

    os.utime(path, (0, 0))
    evaluator.run()  # a second epoch replaces the figure with one of the same 2 cases, not 4
    assert os.listdir(out) == ["test_modalities.png"]
    assert path.stat().st_mtime > 0  # written anew
    assert len(handler._cases) == 2
    assert imread(path).shape == rgb.shape


def test_n_cases_limits_the_rows(tmp_path):
    heights = {}
    for n_cases in (1, 2):
        handler = ChannelOverlays(tmp_path / str(n_cases), MODALITIES, CLASSES, overlay_channel=T1C, n_cases=n_cases)
        _evaluator(handler, batch_size=1).run()  # one case per iteration: the limit holds across iterations
        assert len(handler._cases) == n_cases
        rgb = imread(tmp_path / str(n_cases) / "modalities.png")
        assert rgb.shape[1] > rgb.shape[0]
        heights[n_cases] = rgb.shape[0]
    assert heights[2] - heights[1] == pytest.approx(310, abs=2)  # one more 3.1 in row at 100 dpi


def test_an_epoch_without_cases_removes_the_older_figure(tmp_path):
    handler = ChannelOverlays(tmp_path, MODALITIES, CLASSES, n_cases=1)
    _evaluator(handler).run()
    assert (tmp_path / "modalities.png").exists()
    handler._started(None)
    handler(None)
    assert not (tmp_path / "modalities.png").exists()
