"""Synthetic brain-tumour MRI in four contrasts (FLAIR, T1, T1C, T2) with the BraTS 2015 tumour labels.

A stand-in for the BraTS data of Kayalibay et al., "CNN-based segmentation of medical imaging data" (2017),
implementing:

- Section 3.1, Data: the BRATS 2015 training set, "four modalities: Flair, T1, T1C and T2", gliomas only ("no
  inclusion of images depicting healthy brains"): every case is one head with one tumour, four co-registered
  channels (:data:`MODALITIES`, one file per modality in a data set, the Model Zoo's BraTS layout); the classes
  "(1) necrosis, (2) edema, (3) non-enhancing and (4) enhancing tumor" (:data:`BRATS_MRI_LABELS`, the BraTS 2015
  numbering), everything else background;
- Section 3.1, image size: the 240 x 240 x 155 images "can be cropped to a region of the size 160 x 144 x 128,
  while still containing the entire brain": the default grid is 160 x 144 x 128 voxels of 1 mm (BraTS images are
  co-registered to 1 mm), x left-right, y posterior-anterior, z inferior-superior. A real brain (some 140 x 170 x
  130 mm) does not fit 144 mm front to back, so the template brain is shortened: about 128-138 mm wide,
  125-133 mm long and 113-117 mm high (cerebellum to vertex) here, a cranial cavity of 0.95-1.15 L (the low end
  of adult values; :data:`TEMPLATE_SCALE`). The whole brain (and the CSF round it) lies
  inside the field of view, except the brain stem, which leaves through the lowest face; the skull and scalp
  beyond it are cut by the array's anterior and posterior faces (and the neck by the lowest);
- Section 3.1, Fig. 7 and Section 4.2, Table 2 (what each modality shows): edema is bright in FLAIR and T2, the
  enhancing rim bright and the necrotic core dark in T1C, the tumour core and edema darker than white matter in T1
  (see the contrast table below);
- Section 3.1, Table 1 (the average class frequencies, brain: background 0.96, necrosis 0.002, edema 0.024, and
  0.005 and 0.006 for the enhancing and non-enhancing tumour, in the order of the table's caption): tumour sizes
  are drawn so that on the default grid the mean frequencies are about background 0.964, necrosis 0.002, edema
  0.023, non-enhancing 0.006 and enhancing 0.005 (mean of 24 cases; checked in the tests within a factor 2.5);
- Section 4.2, the synthetic healthy brains "produced by mirroring one hemisphere of the brain that does not
  include any voxels labelled as unhealthy ... for all images where such an operation is possible. These are
  images where the tumorous tissue is contained within a single hemisphere": the tumour-free anatomy is exactly
  left-right symmetric about the mid-sagittal plane (below), the tumour lies in one hemisphere, and a case crosses
  the mid-sagittal plane with probability ``p_cross_midline`` (default 0.25); the datalist fields
  ``tumor_hemisphere`` (``"left"``, ``"right"`` or ``"both"``; ``"none"`` only when a field of view smaller than
  the head leaves the tumour out) and ``crosses_midline`` say which, read from the label map.

Mid-sagittal plane: the plane ``x = (nx - 1) / 2`` in array (voxel index) coordinates, world ``x = 0`` mm under the
affine ``centered_affine(shape, spacing)``. For an even ``nx`` (160 by default) it runs between columns
``nx / 2 - 1`` and ``nx / 2`` (79 | 80), and ``array[::-1]`` mirrors the volume about it exactly; for an odd ``nx``
it runs through column ``(nx - 1) / 2``, which belongs to neither hemisphere. Column ``i`` is in the patient's
right hemisphere when ``i > (nx - 1) / 2`` (RAS+: x grows to the right) and in the left when ``i < (nx - 1) / 2``.
Before the tumour is drawn, the image (without bias field and noise), the label map and the tissue map are exactly
symmetric: ``a[i] == a[nx - 1 - i]``. The tumour does not deform the brain (no mass effect), so away from the
tumour a hemisphere mirrored about the plane matches the other one up to bias field and noise. The datalist field
``midsagittal_index`` records ``(nx - 1) / 2``.

Invented (the paper states none of it): the anatomy, its sizes and every number below. BraTS images are
skull-stripped; the phantom keeps skull and scalp (``skull_stripped=True`` zeroes everything outside the cranial
cavity instead). All tumours look like high-grade gliomas (every case has all four tumour classes); the paper's 54
low-grade cases, often without enhancement or necrosis, are not modelled, nor are mass effect, vessels, choroid
plexus, motion or the BraTS annotation style.

Anatomy (template mm of :mod:`common.phantoms.brain_anatomy`: cerebrum, posterior fossa, brain stem, tentorium and
deep core; drawn in this order, later over earlier, with partial volume; a voxel takes the tissue of the last
structure covering it): air; the scalp (skin over subcutaneous fat), the skull (diploe between two cortical tables)
and the cranial cavity filled with CSF; the supratentorial brain, a cortical grey-matter ribbon over white matter
folded by CSF-filled sulci (:func:`~common.phantoms.brain_anatomy.sulcal_distance`); the cerebellum (grey over a
white core) below the tentorium and the brain stem; the deep grey nuclei (thalamus, lentiform and caudate nuclei);
the interhemispheric fissure (CSF) with the falx (dura) and the tentorium; the lateral, third and fourth ventricles
and the aqueduct. Only the right half is drawn; the left is its mirror image. The pose (per case): size 96-100 %
(+-2 % per axis) of the template scaled by :data:`TEMPLATE_SCALE`, a tilt of up to 3 degrees about the left-right
axis only, the brain centred in y and z (+-1 mm); no shift or rotation that would move the mid-sagittal plane.

Tumour (per case, drawn last, labelled): a core (a randomly rotated, smoothly warped ellipsoid of 15-25 mm radius,
+-20 % per axis) and the edema round it, the core dilated by 7-15 mm (+-50 % over its surface) joined with one or
two finger-like lobes of edema. Inside the core, from outside in: non-enhancing tumour (12-32 % of the core radius
thick, patchy), the enhancing rim (20-38 %, at least a voxel thick), the necrotic core (at least 7 mm in mean
radius, so it shows on a 4 mm grid); the inner surfaces are scaled copies of the core's, moved in and out by up to
30 % of the layer's thickness. Every region is clipped to the supratentorial brain (0.5 mm inside its surface,
outside the ventricles), and, unless the case crosses the midline, to its own hemisphere (at least the fissure's
half width plus 1 mm from the mid-sagittal plane, so no voxel at or across the plane is tumour). The centre is
drawn in one hemisphere (15-48 mm from the midline in the template) or, for a crossing case, within 3 mm of the
plane above the lateral ventricles (a "butterfly" glioma through the corpus callosum); the first of 24 candidate
centres with room for the core in the brain and 10 mm from the ventricles is used.

Contrast (arbitrary MR units, per modality a reference signal drawn in 500-1500; relative to it, per tissue and
modality, :data:`RELATIVE_SIGNAL` times a per-case factor 0.94-1.06). The orders that the tests check: T1, white
matter > grey matter > CSF (dark); T2, CSF (bright) > grey matter > white matter; FLAIR, CSF suppressed (dark), grey
matter > white matter, edema brightest; T1C like T1 with the enhancing rim brightest and the necrotic core dark.
The tumour has a smooth multiplicative texture (standard deviation 6-12 %, about 6 mm grain). Each modality's
clean image is multiplied by its own smooth bias field ``exp(b)`` (``b`` a Gaussian random field of 100 mm
correlation and standard deviation 0.04-0.12) and made a magnitude image with Rician noise (sigma 1.5-3 % of the
reference signal), so air is a Rayleigh floor of a few % of white matter.

Orientation (as every phantom here): arrays ``[X, Y, Z]`` (labels) and ``[X, Y, Z, 4]`` (image, channels last,
FLAIR, T1, T1C, T2) with affine ``diag(spacing)`` centred on world 0 (RAS+). Images float32, labels uint8. The
anatomy is in mm, so any ``shape`` and ``spacing`` render the same head; a coarse grid such as 40 x 36 x 32 voxels
of 4 mm (the default field of view) still holds every tumour class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.phantoms.brain_anatomy import CEREBRUM, CORE, FOSSA, STEM, TENTORIUM, Pose, smooth_min, sulcal_distance
from common.phantoms.drawing import (
    Canvas,
    Ellipsoid,
    Painter,
    SmoothWarp,
    Tube,
    Union,
    centered_affine,
    check_grid,
    random_rotation,
    rim_profile,
    rotation_matrix,
    smooth_random_field,
)
from common.phantoms.registry import PhantomTask

__all__ = [
    "generate_brats_mri",
    "generate_brats_mri_dense",
    "BRATS_MRI_LABELS",
    "MODALITIES",
    "TISSUES",
    "RELATIVE_SIGNAL",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_TASK",
]

logger = logging.getLogger(__name__)

#: 160 x 144 x 128 voxels of 1 mm: the paper's cropped BraTS size (x left-right, y posterior-anterior, z up).
DEFAULT_SHAPE = (160, 144, 128)
DEFAULT_SPACING = (1.0, 1.0, 1.0)

BRATS_MRI_LABELS = {0: "background", 1: "necrosis", 2: "edema", 3: "non-enhancing tumor", 4: "enhancing tumor"}
BG, NECROSIS, EDEMA, NON_ENHANCING, ENHANCING = range(5)
#: The image channels, in order (channel index as a string -> modality), as ``dataset.json`` lists them.
MODALITIES = {"0": "FLAIR", "1": "T1", "2": "T1C", "3": "T2"}

#: The tissue map of :func:`generate_brats_mri_dense` (the tissue covering at least half of each voxel).
TISSUES = {
    0: "air",
    1: "skin",
    2: "fat",
    3: "cortical bone",
    4: "diploe",
    5: "csf",
    6: "grey matter",
    7: "white matter",
    8: "deep grey matter",
    9: "dura",
    10: "edema",
    11: "non-enhancing tumor",
    12: "enhancing tumor",
    13: "necrosis",
}
_AIR, _SKIN, _FAT, _CORTICAL, _DIPLOE, _CSF, _GM, _WM, _DEEP, _DURA, _EDEMA, _NONENH, _ENH, _NECROSIS = range(14)
_CODES = {name: code for code, name in TISSUES.items()}

#: Signal of each tissue relative to the modality's reference signal, (FLAIR, T1, T1C, T2); each value is
#: multiplied by a factor drawn per case in :data:`SIGNAL_JITTER`.
RELATIVE_SIGNAL = {
    "skin": (0.55, 0.55, 0.6, 0.45),
    "fat": (0.9, 1.35, 1.35, 1.0),
    "cortical bone": (0.04, 0.04, 0.04, 0.04),
    "diploe": (0.5, 0.9, 0.95, 0.55),
    "csf": (0.12, 0.28, 0.28, 1.6),
    "grey matter": (0.8, 0.72, 0.74, 0.88),
    "white matter": (0.6, 1.0, 1.0, 0.62),
    "deep grey matter": (0.72, 0.8, 0.82, 0.78),
    "dura": (0.3, 0.35, 0.9, 0.3),
    "edema": (1.4, 0.62, 0.64, 1.3),
    "non-enhancing tumor": (1.15, 0.55, 0.6, 1.15),
    "enhancing tumor": (1.05, 0.62, 1.55, 1.0),
    "necrosis": (0.5, 0.35, 0.33, 1.45),
}
SIGNAL_JITTER = (0.94, 1.06)
REFERENCE_SIGNAL_RANGE = (500.0, 1500.0)
NOISE_RANGE = (0.015, 0.03)  # Rician noise sigma, relative to the modality's reference signal
BIAS_STD_RANGE = (0.04, 0.12)  # standard deviation of each modality's log bias field
BIAS_CORRELATION_MM = 100.0
TEXTURE_STD_RANGE = (0.06, 0.12)  # the tumour's multiplicative texture
#: Template anatomy scale (x, y, z): the template brain (132 mm wide, 164 mm long, 142 mm high) shortened to fit the
#: paper's 160 x 144 x 128 mm crop.
TEMPLATE_SCALE = (1.05, 0.82, 0.845)
NECROSIS_MIN_MM = 7.0  # the least mean radius of the necrotic core
_N_CANDIDATES = 24  # tumour centres drawn per case; the first with room for the core is used

# Lateral ventricle (template mm, right side; the left is its mirror image): body and frontal horn from front to
# back, the occipital and temporal horns from the atrium. Points (x, y, z) and radii.
_LATERAL = (
    np.array([[7.0, 32.0, 6.0], [9.0, 20.0, 11.0], [10.0, 6.0, 13.0], [11.0, -10.0, 13.0], [15.0, -24.0, 10.0]]),
    np.array([3.0, 4.0, 3.5, 3.2, 4.0]),
)
_ATRIUM = np.array([22.0, -32.0, 4.0])
_OCCIPITAL = (np.array([[19.0, -44.0, 6.0], [15.0, -54.0, 6.0]]), np.array([3.5, 2.0]))
_TEMPORAL = (np.array([[29.0, -24.0, -7.0], [32.0, -10.0, -17.0], [31.0, 4.0, -21.0]]), np.array([3.0, 2.5, 2.0]))
# Deep grey nuclei (template mm, right side): centre and radii of thalamus, lentiform nucleus, caudate head.
_NUCLEI = (
    ((11.0, -12.0, 4.0), (7.5, 12.0, 8.5)),
    ((23.0, 2.0, 2.0), (6.0, 14.0, 9.5)),
    ((14.0, 15.0, 10.0), (4.5, 9.0, 8.0)),
)


def _check_kwargs(shape: Any, spacing: Any, p_cross_midline: Any, skull_stripped: Any) -> tuple:
    """Check the generator's arguments.

    Args:
        shape: array shape.
        spacing: voxel size in mm.
        p_cross_midline: the probability that a case's tumour crosses the mid-sagittal plane.
        skull_stripped: whether to zero everything outside the cranial cavity.

    Returns:
        ``(shape, spacing, probability, skull_stripped)`` normalised.

    Raises:
        TypeError: ``p_cross_midline`` is not a number or ``skull_stripped`` not a bool.
        ValueError: a bad shape or spacing, or a probability outside [0, 1].
    """
    shape, spacing = check_grid(shape, spacing)
    p = p_cross_midline
    if not isinstance(p, (bool, np.bool_, int, float, np.integer, np.floating)):
        raise TypeError(f"p_cross_midline={p!r}; expected a probability in [0, 1]")
    if not 0.0 <= float(p) <= 1.0:  # also refuses NaN
        raise ValueError(f"p_cross_midline={p!r}; expected a probability in [0, 1]")
    if not isinstance(skull_stripped, (bool, np.bool_)):
        raise TypeError(f"skull_stripped={skull_stripped!r}; expected True or False")
    return shape, spacing, float(p), bool(skull_stripped)


def _mirror(half: np.ndarray, nx: int) -> np.ndarray:
    """Return the full ``nx`` columns from the right half (columns ``nx // 2`` on) and its mirror image.

    Args:
        half: ``[nx - nx // 2, ...]``, the columns at and right of the mid-sagittal plane.
        nx: the full number of columns.

    Returns:
        ``[nx, ...]`` with ``out[i] == out[nx - 1 - i]``.
    """
    start = nx // 2
    return np.concatenate([half[half.shape[0] - start :][::-1], half], axis=0)


def _waves(rng: np.random.Generator, wavelength: float, n_modes: int) -> Callable[..., np.ndarray]:
    """Return a smooth random function of world mm: a sum of plane cosines, about unit standard deviation.

    Args:
        rng: the random generator (draws ``5 * n_modes`` numbers).
        wavelength: the mean wavelength in mm (each mode within +-30 %).
        n_modes: the number of cosines.

    Returns:
        ``f(x, y, z)`` on broadcast axes, float32.
    """
    directions = rng.normal(size=(n_modes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k = (directions * (2 * np.pi / (wavelength * rng.uniform(0.7, 1.3, size=n_modes)))[:, None]).astype(np.float32)
    phases = rng.uniform(0.0, 2 * np.pi, size=n_modes).astype(np.float32)
    norm = np.float32(np.sqrt(2.0 / n_modes))

    def field(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), dtype=np.float32)
        for km, phase in zip(k, phases, strict=True):
            out += np.cos(km[0] * x + km[1] * y + (km[2] * z + phase))
        return out * norm

    return field


def _two_layers(
    signal: dict[str, np.ndarray], depth: np.ndarray, thickness: float, outer: str, inner: str
) -> tuple[list[np.ndarray], np.ndarray]:
    """Return the four channels' values and the tissue codes of a shell of two tissues (skin over fat, ...).

    Args:
        signal: tissue name -> the four channels' signal.
        depth: the depth below the shell's outer surface (mm).
        thickness: the outer tissue's thickness (mm).
        outer: the tissue within ``thickness`` of the surface.
        inner: the tissue below it.

    Returns:
        one value array per channel (:func:`~common.phantoms.drawing.rim_profile` of the depth), and the codes.
    """
    pairs = zip(signal[outer], signal[inner], strict=True)
    values = [rim_profile(inside, rim, thickness, 1.0)(depth) for rim, inside in pairs]
    return values, np.where(depth < thickness, _CODES[outer], _CODES[inner]).astype(np.uint8)


def _draw_signal(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw the case's reference signal per modality and every tissue's signal.

    Args:
        rng: the random generator.

    Returns:
        the four reference signals, and tissue name -> its four signals (float64 arrays).
    """
    reference = rng.uniform(*REFERENCE_SIGNAL_RANGE, size=len(MODALITIES))
    signal = {
        name: reference * np.asarray(rel) * rng.uniform(*SIGNAL_JITTER, size=len(MODALITIES))
        for name, rel in RELATIVE_SIGNAL.items()
    }
    signal["air"] = np.zeros(len(MODALITIES))
    return reference, signal


def _draw_pose(rng: np.random.Generator) -> Pose:
    """Draw the head's size and tilt (about the left-right axis only) and centre the brain in y and z.

    Args:
        rng: the random generator.

    Returns:
        the pose, with no left-right shift and no rotation that would move the mid-sagittal plane.
    """
    scale = rng.uniform(0.96, 1.0) * rng.uniform(0.98, 1.02, size=3) * np.asarray(TEMPLATE_SCALE)
    rotation = rotation_matrix([rng.uniform(-3.0, 3.0), 0.0, 0.0])
    # template extent of cerebrum and posterior fossa: y from -84 to 80, z from -75 to 67 mm
    middle = np.array([0.0, -2.0, -4.0])
    shift = -(rotation @ (middle * scale)) + np.array([0.0, *rng.uniform(-1.0, 1.0, size=2)])
    return Pose(rotation, scale, shift)


def _head(rng: np.random.Generator, shape: tuple, spacing: tuple, signal: dict) -> dict[str, Any]:
    """Draw the tumour-free head on the right half of the grid (columns ``nx // 2`` on) and mirror it.

    Args:
        rng: the random generator.
        shape: the full array shape.
        spacing: voxel size in mm.
        signal: tissue name -> the four channels' signal.

    Returns:
        ``channels`` (four float32 ``[X, Y, Z]``), ``label`` (all background), ``tissue``, the full-grid signed
        distances ``brain`` (the supratentorial brain), ``ventricles`` and ``cavity`` (the cranial cavity), the
        ``pose`` and ``fissure_half`` (the interhemispheric fissure's half width, mm).
    """
    nx = shape[0]
    start = nx // 2
    half_shape = (nx - start, shape[1], shape[2])
    origin = centered_affine(shape, spacing)[:3, 3] + np.array([start * spacing[0], 0.0, 0.0])
    canvas = Canvas(half_shape, spacing, background=0.0, origin=origin)
    painter = Painter(canvas, extra=[np.zeros(half_shape, np.float32) for _ in range(len(MODALITIES) - 1)])

    def tissue(sdf: np.ndarray, name: str, sl: Any = None) -> None:  # one tissue, label background, four channels
        painter.sdf(sdf, signal[name], BG, _CODES[name], sl)

    pose = _draw_pose(rng)
    mm = np.float32(pose.mean_scale)
    t_skull, t_scalp, skin = rng.uniform(5.0, 7.0), rng.uniform(4.0, 6.0), rng.uniform(1.5, 2.5)
    rim, gap = rng.uniform(1.0, 2.0), rng.uniform(2.0, 3.0)  # subarachnoid space over the brain, tentorium
    cortex, sulcus_half, sulcus_depth = rng.uniform(2.5, 3.5), rng.uniform(0.6, 1.0), rng.uniform(9.0, 14.0)
    fissure_half, falx_half = rng.uniform(1.0, 1.8), rng.uniform(0.4, 0.7)
    width = rng.uniform(0.9, 1.3)  # lateral ventricles' radii
    nucleus_sizes = rng.uniform(0.9, 1.1, size=len(_NUCLEI))

    # Full-grid distances on the right half: cerebrum (smoothly deformed), posterior fossa, brain stem, cavity.
    axes = (canvas.axes[0][:, None, None], canvas.axes[1][None, :, None], canvas.axes[2][None, None, :])
    cerebrum = pose.ellipsoid(*CEREBRUM, warp=SmoothWarp(rng, 2.0, 110.0))
    fossa = pose.ellipsoid(*FOSSA, warp=SmoothWarp(rng, 1.5, 80.0))
    stem_points, stem_radii = pose.points(STEM[0]), STEM[1] * pose.mean_scale
    d_cer = np.broadcast_to(cerebrum.sdf(*axes), half_shape)
    d_fos = np.broadcast_to(fossa.sdf(*axes), half_shape)
    d_cistern = Tube(stem_points, stem_radii + 3.0).sdf(*axes)
    cavity = smooth_min(smooth_min(d_cer, d_fos, 8.0), d_cistern, 4.0)
    xt, yt, zt = pose.template_coordinates(*axes)
    tent = TENTORIUM
    z_tent = tent["apex_z"] + tent["slope_y"] * (yt - tent["apex_y"]) - tent["slope_x"] * np.abs(xt)
    infra = np.maximum(zt - z_tent, yt - tent["front_y"]) * mm  # < 0 below the tentorium
    midline = np.abs(xt) * np.float32(pose.scale[0])  # mm from the mid-sagittal plane

    # Scalp (skin over fat), skull (diploe between cortical tables), the cavity's CSF.
    head = cavity - np.float32(t_skull + t_scalp)
    values, codes = _two_layers(signal, -head, skin, "skin", "fat")
    painter.sdf(head, values, BG, codes)
    skull_depth = np.minimum(np.float32(t_skull) - cavity, np.maximum(cavity, 0.0))
    values, codes = _two_layers(signal, skull_depth, 1.5, "cortical bone", "diploe")
    painter.sdf(cavity - np.float32(t_skull), values, BG, codes)
    tissue(cavity, "csf")

    # Supratentorial brain: cortex over white matter, folded by sulci; cerebellum and brain stem.
    d_brain = np.minimum(d_cer, d_fos) + np.float32(rim)
    d_sup = np.maximum(d_brain, np.float32(gap / 2) - infra)
    tissue(d_sup, "grey matter")
    found = canvas.region(*cerebrum.bounds())
    sulci = sulcal_distance(rng, pose, canvas, None if found is None else found[0])
    if found is not None and sulci is not None:
        sl = found[0]
        dist, vary = sulci
        below = -d_sup[sl]
        d_sulcus = np.float32(sulcus_depth) * (1.0 + np.float32(0.3) * vary)
        d_wm = np.maximum(cortex - below, np.minimum(sulcus_half + cortex - dist, d_sulcus + cortex - below))
        tissue(d_wm, "white matter", sl)
        tissue(np.maximum(np.maximum(dist - sulcus_half, below - d_sulcus), d_sup[sl]), "csf", sl)
    else:
        tissue(d_sup + np.float32(cortex), "white matter")
    d_cbl = np.maximum(d_brain, infra + np.float32(gap / 2))
    tissue(d_cbl, "grey matter")
    tissue(d_cbl + np.float32(rng.uniform(5.0, 8.0)), "white matter")
    found = canvas.fraction(Tube.through(stem_points, stem_radii))
    if found is not None:
        tissue(found[2], "white matter", found[0])

    # Deep grey nuclei, the interhemispheric fissure with the falx, the tentorium.
    for (center, radii), size in zip(_NUCLEI, nucleus_sizes, strict=True):
        found = canvas.fraction(pose.ellipsoid(center, np.asarray(radii) * size))
        if found is not None:
            tissue(found[2], "deep grey matter", found[0])
    core = (
        np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip((xt, yt, zt), CORE[0], CORE[1], strict=True)))
        - np.float32(1.0)
    ) * np.float32(CORE[1][1] * pose.mean_scale)
    lining = np.maximum(np.maximum(midline - np.float32(fissure_half + cortex), -core), d_sup)
    tissue(lining, "grey matter")
    fissure = np.maximum(np.maximum(midline - np.float32(fissure_half), -core), d_sup - np.float32(rim))
    tissue(fissure, "csf")
    falx = np.maximum(np.maximum(midline - np.float32(falx_half), np.float32(3.0) - core), np.maximum(-infra, cavity))
    tissue(falx, "dura")
    tentorium = np.maximum(np.abs(zt - z_tent) * mm - np.float32(falx_half), (yt - tent["front_y"]) * mm)
    tissue(np.maximum(tentorium, cavity), "dura")

    # Ventricles: lateral (body and frontal, occipital and temporal horns), third, aqueduct, fourth.
    body = Tube.through(pose.points(np.vstack([_LATERAL[0], _ATRIUM])), np.append(_LATERAL[1], 5.0) * width * mm, 4)
    horns = [
        Tube.through(pose.points(np.vstack([_ATRIUM, points])), np.append(5.0, radii) * width * mm, 4)
        for points, radii in (_OCCIPITAL, _TEMPORAL)
    ]
    aqueduct = Tube.through(pose.points([[0.0, -18.0, -6.0], [0.0, -26.0, -22.0], [0.0, -36.0, -38.0]]), 1.0, 3)
    third = pose.ellipsoid((0.0, -8.0, 3.0), (2.5 * width, 14.0, 8.0))
    fourth = pose.ellipsoid((0.0, -39.0, -44.0), (6.5, 4.0, 7.0))
    d_vent = Union([body, *horns, aqueduct, third, fourth]).sdf(*axes)
    tissue(d_vent, "csf")

    full = {"brain": d_sup, "ventricles": np.broadcast_to(d_vent, half_shape), "cavity": cavity}
    return {
        "channels": [_mirror(channel, nx) for channel in painter.images],
        "label": _mirror(canvas.label, nx),
        "tissue": _mirror(painter.tissue, nx),
        **{key: _mirror(value, nx) for key, value in full.items()},
        "pose": pose,
        "fissure_half": fissure_half,
    }


def _frame(direction: np.ndarray) -> np.ndarray:
    """Return a rotation whose third column is ``direction`` (taking a shape's local z axis to it).

    Args:
        direction: a unit vector.

    Returns:
        a 3 x 3 orthonormal matrix with determinant 1.
    """
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(helper, direction)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(direction, u), direction], axis=1)


def _lookup(volume: np.ndarray, points: np.ndarray, shape: tuple, spacing: tuple) -> np.ndarray:
    """Return a full-grid array's value at the voxel nearest each world point (``+inf`` outside the grid).

    Args:
        volume: ``[X, Y, Z]``.
        points: ``(N, 3)`` world mm.
        shape: the array shape.
        spacing: voxel size in mm.

    Returns:
        ``(N,)`` values.
    """
    affine = centered_affine(shape, spacing)
    index = np.rint((points - affine[:3, 3]) / np.asarray(spacing)).astype(int)
    inside = np.all((index >= 0) & (index < np.asarray(shape)), axis=1)
    out = np.full(len(points), np.inf)
    i = index[inside]
    out[inside] = volume[i[:, 0], i[:, 1], i[:, 2]]
    return out


class _Tumour:
    """The case's tumour: core, layers, edema and where it sits (world mm).

    Args:
        rng: the random generator (the same number of draws whatever the grid or the crossing decision).
        crosses: whether the tumour is placed across the mid-sagittal plane.
        head: what :func:`_head` returned (the pose, and the brain's and ventricles' signed distances, to place the
            centre).
        shape: the array shape.
        spacing: voxel size in mm.
    """

    def __init__(
        self, rng: np.random.Generator, crosses: bool, head: dict[str, Any], shape: tuple, spacing: tuple
    ) -> None:
        self.side = 1.0 if rng.uniform() < 0.5 else -1.0  # +1 the patient's right (RAS+), -1 the left
        radius = rng.uniform(15.0, 25.0)
        self.radii = radius * rng.uniform(0.8, 1.2, size=3)
        self.radius = float(np.prod(self.radii) ** (1.0 / 3.0))  # the core's mean radius
        self.rotation = random_rotation(rng, 180.0)
        self.warp = SmoothWarp(rng, 0.2 * radius, 2.5 * radius)
        self.non_enhancing = rng.uniform(0.12, 0.32) * radius
        self.rim = rng.uniform(0.2, 0.38) * radius
        # keep a necrotic core of at least NECROSIS_MIN_MM mean radius (visible on a coarse grid)
        layers = self.non_enhancing + self.rim
        room = self.radius - NECROSIS_MIN_MM
        if layers > room:
            self.non_enhancing, self.rim = self.non_enhancing * room / layers, self.rim * room / layers
        self.edema = rng.uniform(7.0, 15.0)
        self.variation = [_waves(rng, 2.0 * radius, 3) for _ in range(3)]  # edema, non-enhancing, rim thickness
        self.texture = _waves(rng, 6.0, 12)
        self.texture_std = rng.uniform(*TEXTURE_STD_RANGE)
        n_lobes = int(rng.integers(1, 3))
        lobe_dirs = rng.normal(size=(2, 3))
        lobe_dirs /= np.linalg.norm(lobe_dirs, axis=1, keepdims=True)
        lobe_sizes = rng.uniform([0.35, 1.0], [0.55, 1.6], size=(2, 2))
        # candidate centres (template mm), in one hemisphere or, when crossing, across the corpus callosum
        sided = rng.uniform([15.0, -55.0, -12.0], [48.0, 45.0, 40.0], size=(_N_CANDIDATES, 3))
        sided[:, 0] *= self.side
        middle = rng.uniform([-3.0, -30.0, 10.0], [3.0, 25.0, 40.0], size=(_N_CANDIDATES, 3))
        candidates = head["pose"].points(middle if crosses else sided)
        depth = -_lookup(head["brain"], candidates, shape, spacing)
        # room for the core in the brain, and for the necrotic core beside the ventricles
        room = (depth >= 0.6 * radius + 4.0) & (_lookup(head["ventricles"], candidates, shape, spacing) >= 10.0)
        self.center = candidates[int(np.argmax(room)) if room.any() else int(np.argmax(depth))]
        self.lobes = [
            Ellipsoid(self.center + direction * radius, radius * np.array([thick, thick, length]), _frame(direction))
            for direction, (thick, length) in zip(lobe_dirs[:n_lobes], lobe_sizes[:n_lobes], strict=True)
        ]
        self.core = Ellipsoid(self.center, self.radii, self.rotation, warp=self.warp)
        # how far (mm) from the centre anything of the tumour can reach: the warped core and its edema, the lobes
        self.reach = max(1.45 * radius + 1.55 * self.edema, 2.65 * radius) + 2.0

    def paint(
        self,
        painter: Painter,
        signal: dict[str, np.ndarray],
        head: dict[str, Any],
        crosses: bool,
        midplane_margin: float,
    ) -> None:
        """Paint edema, non-enhancing tumour, enhancing rim and necrosis (labels and tissue map too).

        Args:
            painter: the full-grid four-channel painter.
            signal: tissue name -> the four channels' signal.
            head: what :func:`_head` returned (the clipping distances).
            crosses: whether the tumour may cross the mid-sagittal plane.
            midplane_margin: the least distance (mm) from the plane of a tumour in one hemisphere.
        """
        canvas = painter.canvas
        found = canvas.region(self.center - self.reach, self.center + self.reach)
        if found is None:
            return
        sl, (x, y, z) = found
        crop = tuple(s.stop - s.start for s in sl)
        clip = np.maximum(head["brain"][sl] + np.float32(0.5), -head["ventricles"][sl])
        if not crosses:
            clip = np.maximum(clip, np.broadcast_to(np.float32(midplane_margin) - np.float32(self.side) * x, crop))
        d_core = np.broadcast_to(self.core.sdf(x, y, z), crop)
        var_edema, var_non, var_rim = (np.clip(f(x, y, z), -1.5, 1.5) for f in self.variation)
        d_edema = d_core - np.float32(self.edema) * (1.0 + np.float32(0.35) * var_edema)
        for lobe in self.lobes:
            d_edema = smooth_min(d_edema, np.broadcast_to(lobe.sdf(x, y, z), crop), 4.0)
        # the inner layers are scaled copies of the core (same warp), their surfaces moved in and out by up to
        # 30 % of the layer's thickness; the enhancing rim keeps at least a voxel's thickness round the necrosis
        scale_enh = 1.0 - self.non_enhancing / self.radius
        scale_nec = 1.0 - (self.non_enhancing + self.rim) / self.radius
        enh = Ellipsoid(self.center, self.radii * scale_enh, self.rotation, warp=self.warp).sdf(x, y, z)
        nec = Ellipsoid(self.center, self.radii * scale_nec, self.rotation, warp=self.warp).sdf(x, y, z)
        d_enh = np.maximum(enh - np.float32(0.2 * self.non_enhancing) * var_non, d_core)
        d_nec = np.maximum(nec - np.float32(0.2 * self.rim) * var_rim, d_enh + np.float32(canvas.edge))
        texture = 1.0 + np.float32(self.texture_std) * np.clip(self.texture(x, y, z), -3.0, 3.0)
        for d, name, label, code in (
            (d_edema, "edema", EDEMA, _EDEMA),
            (d_core, "non-enhancing tumor", NON_ENHANCING, _NONENH),
            (d_enh, "enhancing tumor", ENHANCING, _ENH),
            (d_nec, "necrosis", NECROSIS, _NECROSIS),
        ):
            values = [np.broadcast_to(np.float32(v) * texture, crop) for v in signal[name]]
            painter.sdf(np.maximum(d, clip), values, label, code, sl)


def generate_brats_mri_dense(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    p_cross_midline: float = 0.25,
    skull_stripped: bool = False,
) -> dict[str, Any]:
    """Generate one brain-tumour MRI case with its ground truth (for tests and figures).

    Draws exactly what :func:`generate_brats_mri` draws (same ``rng`` use), so their common entries are equal. The
    random draws do not depend on the grid, ``p_cross_midline`` or ``skull_stripped`` apart from the crossing
    decision itself: the same ``rng`` state gives the same head, tumour size and shape.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``.
        spacing: voxel size in mm.
        p_cross_midline: the probability that the tumour crosses the mid-sagittal plane.
        skull_stripped: zero the image outside the cranial cavity (as BraTS images are).

    Returns:
        the entries of :func:`generate_brats_mri` and ``tissue`` (uint8 ``[X, Y, Z]``, codes :data:`TISSUES`),
        ``clean`` (float32 ``[X, Y, Z, 4]``, the image before bias field and noise), ``bias`` (``[X, Y, Z, 4]``, the
        multiplicative fields), ``reference`` (the four reference signals), ``signal`` (tissue name -> four
        signals), ``noise_sigma`` (four values), ``cavity`` (bool ``[X, Y, Z]``, the cranial cavity),
        ``tumor_center_mm`` and ``pose``.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    shape, spacing, p_cross, stripped = _check_kwargs(shape, spacing, p_cross_midline, skull_stripped)
    crosses = bool(rng.uniform() < p_cross)
    reference, signal = _draw_signal(rng)
    head = _head(rng, shape, spacing, signal)
    tumour = _Tumour(rng, crosses, head, shape, spacing)

    canvas = Canvas(shape, spacing, background=0.0)
    canvas.image, canvas.label = head["channels"][0], head["label"]
    painter = Painter(canvas, extra=head["channels"][1:])
    painter.tissue = head["tissue"]
    tumour.paint(painter, signal, head, crosses, head["fissure_half"] + 1.0)
    clean = painter.images

    # Bias field per modality, then a magnitude image with Rician noise per modality.
    bias_std = rng.uniform(*BIAS_STD_RANGE, size=len(MODALITIES))
    noise_sigma = reference * rng.uniform(*NOISE_RANGE, size=len(MODALITIES))
    bias = [np.exp(smooth_random_field(rng, shape, spacing, BIAS_CORRELATION_MM, std)) for std in bias_std]
    cavity = head["cavity"] <= 0
    image = np.empty((*shape, len(MODALITIES)), dtype=np.float32)
    for c, sigma in enumerate(noise_sigma.astype(np.float32)):
        real = clean[c] * bias[c] + rng.standard_normal(shape, dtype=np.float32) * sigma
        imaginary = rng.standard_normal(shape, dtype=np.float32) * sigma
        magnitude = np.sqrt(real * real + imaginary * imaginary, out=real)
        if stripped:
            magnitude[~cavity] = 0.0
        image[..., c] = magnitude

    label = canvas.label
    nx = shape[0]
    tumour_columns = np.flatnonzero((label > 0).any(axis=(1, 2)))
    left = bool((tumour_columns < (nx - 1) / 2).any())
    right = bool((tumour_columns > (nx - 1) / 2).any())
    hemisphere = "both" if left and right else "left" if left else "right" if right else "none"
    voxel_ml = float(np.prod(spacing)) / 1000.0
    logger.debug("BraTS MRI phantom: shape %s, tumour %s, crossing %s", shape, hemisphere, crosses)
    return {
        "image": image,
        "label": label,
        "tumor_hemisphere": hemisphere,
        "crosses_midline": left and right,
        "tumor_volume_ml": round(float(np.count_nonzero(label)) * voxel_ml, 2),
        "tumor_core_volume_ml": round(float(np.count_nonzero((label > 0) & (label != EDEMA))) * voxel_ml, 2),
        "midsagittal_index": (nx - 1) / 2.0,
        "tissue": painter.tissue,
        "clean": np.stack(clean, axis=-1),
        "bias": np.stack(bias, axis=-1),
        "reference": reference,
        "signal": signal,
        "noise_sigma": noise_sigma,
        "cavity": cavity,
        "tumor_center_mm": tumour.center,
        "pose": head["pose"],
    }


FIELDS = ("tumor_hemisphere", "crosses_midline", "tumor_volume_ml", "tumor_core_volume_ml", "midsagittal_index")


def generate_brats_mri(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    p_cross_midline: float = 0.25,
    skull_stripped: bool = False,
) -> dict[str, Any]:
    """Generate one synthetic brain-tumour MRI case (FLAIR, T1, T1C, T2) with the BraTS 2015 labels.

    Stand-in for the BraTS data of Kayalibay et al. 2017 (see the module docstring); the phantom generator of the
    task ``brats_mri``. :func:`generate_brats_mri_dense` gives the same case with its ground truth.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(160, 144, 128)`` (the paper's cropped size).
        spacing: voxel size in mm; default ``(1.0, 1.0, 1.0)``.
        p_cross_midline: the probability that a case's tumour crosses the mid-sagittal plane (default 0.25); the
            other cases' tumours lie in one hemisphere (which, at random).
        skull_stripped: zero the image outside the cranial cavity, as in the BraTS images (default False: skull
            and scalp are drawn).

    Returns:
        ``image`` float32 ``[X, Y, Z, 4]`` (channels FLAIR, T1, T1C, T2; arbitrary MR units, magnitude, >= 0),
        ``label`` uint8 ``[X, Y, Z]`` with values :data:`BRATS_MRI_LABELS`, both with affine
        ``centered_affine(shape, spacing)`` (RAS+; the mid-sagittal plane at ``x = (nx - 1) / 2``), and the datalist
        fields ``tumor_hemisphere`` (``"left"``, ``"right"`` or ``"both"``, from the labels), ``crosses_midline``
        (bool), ``tumor_volume_ml`` (labels 1-4) and ``tumor_core_volume_ml`` (labels 1, 3 and 4; mL, two
        decimals) and ``midsagittal_index`` (``(nx - 1) / 2``).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    case = generate_brats_mri_dense(rng, shape, spacing, p_cross_midline, skull_stripped)
    return {key: case[key] for key in ("image", "label", *FIELDS)}


#: The task this module declares (found by :data:`common.phantoms.registry.PHANTOM_TASKS`).
PHANTOM_TASK = PhantomTask(
    name="brats_mri",
    generator=generate_brats_mri,
    labels=BRATS_MRI_LABELS,
    modality=MODALITIES,
    description=(
        "Synthetic brain-tumour MRI phantom in four co-registered contrasts (FLAIR, T1, T1C, T2; arbitrary units) "
        "with the BraTS 2015 labels (necrosis, edema, non-enhancing and enhancing tumor) at the paper's class "
        "imbalance, the tumour in one hemisphere of an exactly left-right symmetric head (or, in some cases, across "
        "the mid-sagittal plane), standing in for the BRATS 2015 data of Kayalibay et al. 2017, Section 3.1"
    ),
    dicom_modality="MR",
    defaults={
        "shape": list(DEFAULT_SHAPE),
        "spacing": [float(s) for s in DEFAULT_SPACING],
        "p_cross_midline": 0.25,
        "skull_stripped": False,
    },
    version=1,
    n_channels=len(MODALITIES),
    channel_layout="files",
    fields=FIELDS,
)
