"""Synthetic non-contrast head CT with eleven labelled neuroanatomical structures (and enlarged-ventricle cases).

A stand-in for the data of Cai et al., "Fully automated segmentation of head CT neuroanatomy using deep learning"
(Radiology: Artificial Intelligence, 2020), implementing:

- Materials and Methods, Data Acquisition and Data Preparation: non-contrast head CT of adults, eleven intracranial
  regions of interest annotated on every axial slice (labels 1-11 of :data:`HEAD_CT_LABELS`, abbreviations in
  :data:`ABBREVIATIONS`); the transverse sinus is not a structure of its own but "included with either BC or CE"
  (drawn as blood, labelled cerebellum here);
- Terminology: the class imbalance, BC, CE, SS and VS being 10.8 %, 2.3 %, 1.3 % and 0.6 % of all voxels, the
  seven small classes 0.01-0.28 % and background 85.5 %. On the default grid the phantom has about 84.9 %
  background, BC 10.8 %, CE 1.8 %, SS 1.4 %, VS 0.46 %, and 0.02-0.29 % for each small class (SP smallest, DV
  largest; mean of six cases, checked in the tests);
- Effect of class weighting (Fig 4): the manual labels have no thin subarachnoid layer at the brain-cranium
  boundary, so the convexity's subarachnoid space is thin here (0.3-1 mm) and mostly unlabelled, while sulci,
  fissures and cisterns are;
- Secondary test datasets: the iNPH set of scans with "severe ventriculomegaly" that "distorts but does not efface
  normal anatomy": with ``enlarged_ventricles`` a case's lateral ventricles are wider and much taller, the third and
  temporal horns wider (about 2.8-3.8 times the ventricular volume, some 100-280 mL against 35-75 mL, an Evans index
  of 0.32-0.46 against 0.21-0.26), the caudate nuclei (flattened), internal capsules, lentiform nuclei, insulae and
  thalami pushed aside, the septum pellucidum stretched.

It is a phantom for testing pipelines and demonstrating training, not a model of real anatomy. Synthetic are: the
anatomy (template shapes in mm, partly shared with the perfusion phantom through
:mod:`common.phantoms.brain_anatomy`), its per-case size (+-7 %), position (+-5 mm), tilt (<= 6 degrees) and smooth
deformation, every HU value (:data:`HU_RANGES`, drawn per case), the white Gaussian noise (sigma 4-8 HU) and a mild
smooth non-uniformity (1-3 HU). The paper's slices are 512 x 512 pixels; the default grid here is 128 x 128 x 40
voxels of 1.8 x 1.8 x 5 mm, a 230 x 230 x 200 mm field of view (a 230 mm display field of view and 5 mm axial
slices, the usual routine head CT reconstruction) covering the skull base to the vertex.

Orientation (as every phantom here): arrays ``[X, Y, Z]`` in the NIfTI RAS+ convention with affine
``diag(spacing)`` centred on world 0 (:func:`~common.phantoms.drawing.centered_affine`), so ``i`` grows to the
patient's right, ``j`` anterior and ``k`` superior; axial slices are ``image[:, :, k]``. Image values are integer
HU (written int16), labels uint8.

Anatomy (template mm, head upright; drawn in this order, later over earlier, with partial volume; a voxel takes the
label of the last structure covering at least half of it): air; scalp (skin, a subcutaneous fat layer, galea) and
the face and neck (orbits, sinuses, vertebra); the skull (diploe between cortical tables); the cranial cavity
filled with CSF (SS); the supratentorial brain (BC), a cortical grey-matter ribbon over white matter folded by
sulci (SS); the cerebellum below the tentorium (CE, grey over a white core); the brain stem (BC); the internal
capsule (CA, a white-matter band on the medial side of the lentiform nucleus), lentiform nuclei (LN), thalami (BC)
and caudate nuclei (CN, head and body along the lateral wall of the lateral ventricle); the Sylvian fissures and
insular cisterns (SS) and the insular cortex (CO); the interhemispheric fissure (SS); the lateral, third and
fourth ventricles and the aqueduct (VS); the septum pellucidum (SP, a midline sheet between the lateral
ventricles); the central sulcus (CS, a CSF groove from the vertex down towards the Sylvian fissure); the falx,
tentorium, superior sagittal and straight sinuses (DV) and the transverse sinuses (labelled CE). Below the foramen
magnum everything is background. Thin sheets (septum, falx, tentorium, central sulcus) are drawn at least about
half an in-plane voxel thick so they stay visible on coarse grids.

Per case HU (:data:`HU_RANGES`): white matter 24-30, cortical grey matter 5-11 HU above it (34-41), deep grey
nuclei up to 3 HU below the cortex, CSF 2-12, dura 50-65, venous blood 50-70, scalp soft tissue 30-55, bone: a
600-900 HU diploe between 1100-1500 HU tables.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.phantoms.brain_anatomy import (
    CEREBRUM,
    CORE,
    FORAMEN_MAGNUM_Z,
    FOSSA,
    STEM,
    TENTORIUM,
    Pose,
    draw_pose,
    face_and_neck,
    smooth_min,
    sulcal_distance,
    surface_points,
)
from common.phantoms.drawing import (
    Canvas,
    Painter,
    SmoothWarp,
    Tube,
    Union,
    check_grid,
    rim_profile,
    smooth_random_field,
    soft_edge,
)
from common.phantoms.registry import PhantomTask

__all__ = [
    "generate_head_ct",
    "generate_head_ct_dense",
    "HEAD_CT_LABELS",
    "ABBREVIATIONS",
    "TISSUES",
    "HU_RANGES",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_TASK",
]

logger = logging.getLogger(__name__)

#: 128 x 128 x 40 voxels of 1.8 x 1.8 x 5 mm: a 230 x 230 x 200 mm field of view.
DEFAULT_SHAPE = (128, 128, 40)
DEFAULT_SPACING = (1.8, 1.8, 5.0)

HEAD_CT_LABELS = {
    0: "background",
    1: "brainstem and cerebrum",
    2: "caudate nucleus",
    3: "central sulcus",
    4: "cerebellum",
    5: "dural folds and venous sinuses",
    6: "insular cortex",
    7: "internal capsule",
    8: "lentiform nucleus",
    9: "septum pellucidum",
    10: "subarachnoid space",
    11: "ventricular system",
}
#: The paper's abbreviation of each label (its order of labels 1-11 is alphabetical by abbreviation).
ABBREVIATIONS = {1: "BC", 2: "CN", 3: "CS", 4: "CE", 5: "DV", 6: "CO", 7: "CA", 8: "LN", 9: "SP", 10: "SS", 11: "VS"}
BG, BC, CN, CS, CE, DV, CO, CA, LN, SP, SS, VS = range(12)

#: The tissue map of :func:`generate_head_ct_dense` (the dominant tissue per voxel, for checking HU values).
TISSUES = {
    0: "air or other",
    1: "soft tissue",
    2: "bone",
    3: "csf",
    4: "white matter",
    5: "grey matter",
    6: "deep grey matter",
    7: "dura",
    8: "venous blood",
}
_OTHER, _SOFT, _BONE, _CSF, _WM, _GM, _DEEP, _DURA, _BLOOD = range(9)

#: Range (HU) from which each value is drawn per case. Grey matter is white matter plus a gap drawn in ``gm_wm_gap``
#: above what keeps grey matter at 34 HU or more (so 34-41 HU);
#: deep grey nuclei are grey matter plus ``deep_grey_offset``; the internal capsule white matter plus
#: ``capsule_offset``.
HU_RANGES = {
    "white_matter": (24.0, 30.0),
    "gm_wm_gap": (5.0, 11.0),
    "deep_grey_offset": (-3.0, 0.0),
    "capsule_offset": (-2.0, 0.0),
    "csf": (2.0, 12.0),
    "dura": (50.0, 65.0),
    "venous_blood": (50.0, 70.0),
    "soft_tissue": (30.0, 55.0),
    "scalp_fat": (-100.0, -70.0),
    "diploe": (600.0, 900.0),
    "cortical_bone": (1100.0, 1500.0),
}
GREY_MATTER_MIN = 34.0
NOISE_SIGMA_RANGE = (4.0, 8.0)
NON_UNIFORMITY_RANGE = (1.0, 3.0)
AIR_HU = -1000.0
HU_CLIP = (-1024.0, 3071.0)
#: Ventricular enlargement of the iNPH-like cases: lateral scale of the ventricles' radii, extra height (mm) of the
#: lateral ventricles' bodies and frontal horns, and scale of the third ventricle's width.
ENLARGED_WIDTH, ENLARGED_HEIGHT_MM, ENLARGED_THIRD = (1.6, 1.85), (9.0, 13.0), (2.0, 2.8)

#: The posterior fossa of :mod:`~common.phantoms.brain_anatomy` is enlarged by this factor, for a cerebellum near
#: the paper's share of the voxels.
FOSSA_SCALE = 1.07

# Lateral ventricle (template mm, right side; mirrored for the left): frontal horn and body from front to back
# (y, z, radius; x follows from the septum and the radius), then the atrium, occipital and temporal horns (x, y, z).
_BODY = np.array([[34.0, 7.0, 3.5], [22.0, 10.0, 5.0], [6.0, 13.0, 4.5], [-12.0, 13.0, 4.5], [-24.0, 10.0, 5.5]])
_ATRIUM = np.array([[22.0, -30.0, 8.0], [20.0, -40.0, 6.0], [16.0, -52.0, 4.0]])
_ATRIUM_RADII = np.array([8.0, 6.0, 3.0])
_TEMPORAL = np.array([[22.0, -30.0, 8.0], [30.0, -23.0, -4.0], [33.0, -8.0, -16.0], [32.0, 6.0, -21.0]])
_TEMPORAL_RADII = np.array([5.0, 3.5, 3.0, 2.5])


def _check_kwargs(shape: Any, spacing: Any, enlarged_ventricles: Any) -> tuple:
    """Check the generator's arguments.

    Args:
        shape: array shape.
        spacing: voxel size in mm.
        enlarged_ventricles: the probability of a case with enlarged ventricles (or a bool).

    Returns:
        ``(shape, spacing, probability)`` normalised.

    Raises:
        TypeError: ``enlarged_ventricles`` is not a bool or a number.
        ValueError: a bad shape or spacing, or a probability outside [0, 1].
    """
    shape, spacing = check_grid(shape, spacing)
    p = enlarged_ventricles
    if not isinstance(p, (bool, np.bool_, int, float, np.integer, np.floating)):
        raise TypeError(f"enlarged_ventricles={p!r}; expected True, False or a probability in [0, 1]")
    if not 0.0 <= float(p) <= 1.0:  # also refuses NaN
        raise ValueError(f"enlarged_ventricles={p!r}; expected True, False or a probability in [0, 1]")
    return shape, spacing, float(p)


def _draw_hu(rng: np.random.Generator) -> dict[str, float]:
    """Draw the case's HU values.

    Args:
        rng: the random generator.

    Returns:
        tissue name -> HU (``grey_matter``, ``deep_grey``, ``capsule`` derived as :data:`HU_RANGES` describes).
    """
    hu = {name: float(rng.uniform(*HU_RANGES[name])) for name in HU_RANGES}
    low, high = HU_RANGES["gm_wm_gap"]
    least = max(low, GREY_MATTER_MIN - hu["white_matter"])
    hu["grey_matter"] = hu["white_matter"] + least + (hu.pop("gm_wm_gap") - low) / (high - low) * (high - least)
    hu["deep_grey"] = hu["grey_matter"] + hu.pop("deep_grey_offset")
    hu["capsule"] = hu["white_matter"] + hu.pop("capsule_offset")
    return hu


def _scalp_profile(soft: float, fat: float, thickness: float, fat_mm: float) -> Callable[[np.ndarray], np.ndarray]:
    """Return the scalp's HU as a function of depth: skin, a subcutaneous fat layer, then the galea.

    Args:
        soft: soft-tissue HU.
        fat: fat HU.
        thickness: the scalp's thickness (mm).
        fat_mm: the fat layer's thickness (mm), centred in the scalp.

    Returns:
        the value function of the depth below the skin (mm).
    """
    start = 0.5 * (thickness - fat_mm)

    def value(depth: np.ndarray) -> np.ndarray:
        band = soft_edge(np.float32(start) - depth, 1.0) * soft_edge(depth - np.float32(start + fat_mm), 1.0)
        return np.float32(soft) + np.float32(fat - soft) * band

    return value


class _Ventricles:
    """The case's ventricular system and the deep structures placed around it (template mm).

    Enlargement widens the lateral ventricles' radii, raises their roofs (a second tube above the first), widens
    the third ventricle and pushes the caudate nuclei, internal capsules, lentiform nuclei and thalami aside.

    Args:
        rng: the random generator (the same draws whether or not the case is enlarged).
        enlarged: whether the case has enlarged ventricles.
        thin: the least half thickness of a thin sheet (mm).
    """

    def __init__(self, rng: np.random.Generator, enlarged: bool, thin: float) -> None:
        width = rng.uniform(1.25, 1.6)  # elderly ventricles (the paper's patients are 73 years old on average)
        height = rng.uniform(2.0, 6.0)
        third = rng.uniform(0.9, 1.3)
        factors = (rng.uniform(*ENLARGED_WIDTH), rng.uniform(*ENLARGED_HEIGHT_MM), rng.uniform(*ENLARGED_THIRD))
        self.jitter = rng.normal(0.0, 1.0, size=(3, len(_BODY), 3))
        self.sp_half = max(rng.uniform(0.8, 1.2), thin)
        self.normal_width, self.normal_height, normal_third = width, height, third
        if enlarged:
            width, height, third = width * factors[0], height + factors[1], third * factors[2]
        self.width, self.height, self.third_half = width, height, 2.2 * third
        # the roof (and the corpus callosum over it) rises by this much (mm) in an enlarged case
        self.raise_mm = height - self.normal_height + float(_BODY[2:4, 2].max()) * (width - self.normal_width)
        # lateral displacement of the atria and temporal horns (by enlargement), of the basal ganglia beside the
        # frontal horn (by its width over the template's), and of the thalami (by the third ventricle's enlargement)
        self.push = 2.0 * _BODY[1, 2] * (width - self.normal_width)
        self.lateral_push = 2.0 * _BODY[1, 2] * (width - 1.0)
        self.growth = width / self.normal_width - 1.0
        self.third_push = 2.2 * (third - normal_third)

    def body_points(self, side: float, lift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Return the frontal horn and body's centre line and radii for one side.

        Args:
            side: +1 right, -1 left.
            lift: mm added to z (the raised roof of an enlarged ventricle).

        Returns:
            ``(N, 3)`` template points and ``(N,)`` radii; the medial wall touches the septum pellucidum.
        """
        r = _BODY[:, 2] * self.width
        x = self.sp_half + 0.3 + r
        points = np.stack([side * x, _BODY[:, 0], _BODY[:, 1] + lift], axis=1) + self.jitter[0] * [0.0, 1.0, 1.0]
        return points, r

    def lateral(self, pose: Pose, side: float) -> list[Tube]:
        """Return the tubes of one lateral ventricle (world mm).

        Args:
            pose: the case's pose.
            side: +1 right, -1 left.

        Returns:
            the frontal horn and body (twice, the second raised by the extra height), atrium and occipital horn,
            and temporal horn.
        """
        s = np.array([side, 1.0, 1.0])
        mm = pose.mean_scale
        tubes = []
        for lift in (0.0, self.height):
            points, r = self.body_points(side, lift)
            tubes.append(Tube.through(pose.points(points), r * mm, samples_per_segment=4))
        body_end, r_end = self.body_points(side)[0][-1], _BODY[-1, 2] * self.width
        atrium = _ATRIUM * s + [side * self.push * 0.6, 0.0, 0.0] + self.jitter[1, :3]
        atrium_path = np.concatenate([[body_end], atrium])
        growth = self.width / self.normal_width - 1.0  # the atria and temporal horns grow less than the bodies
        atrium_radii = np.concatenate([[r_end], _ATRIUM_RADII * self.normal_width * (1.0 + 0.7 * growth)])
        tubes.append(Tube.through(pose.points(atrium_path), atrium_radii * mm, samples_per_segment=4))
        temporal = _TEMPORAL * s + [side * self.push * 0.4, 0.0, 0.0] + self.jitter[2, :4]
        temporal[0] = atrium[0]
        radii = _TEMPORAL_RADII * self.normal_width * (1.0 + 1.2 * growth)
        tubes.append(Tube.through(pose.points(temporal), radii * mm, samples_per_segment=4))
        return tubes


def _ellipsoid_sdf(pose: Pose, axes: tuple, center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Return the full-grid signed distance (mm) of an axis-aligned template ellipsoid.

    Args:
        pose: the case's pose.
        axes: the canvas's broadcast world axes.
        center: template centre (mm).
        radii: template radii (mm).

    Returns:
        the signed distance, broadcastable to the grid.
    """
    return pose.ellipsoid(center, radii).sdf(*axes)


def generate_head_ct_dense(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    enlarged_ventricles: float | bool = 0.0,
) -> dict[str, Any]:
    """Generate one synthetic head CT case with its ground truth (for tests and figures).

    Draws exactly what :func:`generate_head_ct` draws (same ``rng`` use), so their common entries are equal. The
    random draws do not depend on ``enlarged_ventricles``: the same ``rng`` state gives the same head with normal
    or with enlarged ventricles.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``.
        spacing: voxel size in mm.
        enlarged_ventricles: the probability that the case has enlarged ventricles (True or False for 1 or 0).

    Returns:
        the entries of :func:`generate_head_ct` and ``tissue`` (uint8 ``[X, Y, Z]``, the dominant tissue per
        voxel, codes :data:`TISSUES`), ``clean`` (float32, the image before noise and non-uniformity), ``hu`` (the
        case's HU values), ``noise_sigma`` (HU), ``evans_index`` (largest width of the frontal horns over the
        largest inner width of the skull, in the template) and ``pose`` (the template-to-world transform).

    Raises:
        TypeError: ``enlarged_ventricles`` of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    shape, spacing, p_enlarged = _check_kwargs(shape, spacing, enlarged_ventricles)
    canvas = Canvas(shape, spacing, background=AIR_HU)
    paint = Painter(canvas)
    thin = 0.55 * max(spacing[0], spacing[1])
    pose = draw_pose(rng)
    mm = np.float32(pose.mean_scale)
    hu = _draw_hu(rng)
    enlarged = bool(rng.uniform() < p_enlarged)
    t_skull, t_scalp, fat_mm = rng.uniform(5.0, 8.0), rng.uniform(4.5, 7.0), rng.uniform(1.0, 3.0)
    rim, gap = rng.uniform(0.3, 1.0), rng.uniform(2.0, 3.0)  # subarachnoid space over the brain, tentorium
    cortex, sulcus_half, sulcus_depth = rng.uniform(3.0, 4.0), rng.uniform(0.6, 1.0), rng.uniform(9.0, 14.0)

    # Full-grid distances: cerebrum (smoothly deformed), posterior fossa, brain stem; the cranial cavity.
    axes = (canvas.axes[0][:, None, None], canvas.axes[1][None, :, None], canvas.axes[2][None, None, :])
    cerebrum = pose.ellipsoid(*CEREBRUM, warp=SmoothWarp(rng, 4.0, 110.0))
    fossa = pose.ellipsoid(FOSSA[0], np.asarray(FOSSA[1]) * FOSSA_SCALE, warp=SmoothWarp(rng, 2.5, 80.0))
    stem_points, stem_radii = pose.points(STEM[0]), STEM[1] * pose.mean_scale
    d_cer = np.broadcast_to(cerebrum.sdf(*axes), shape)
    d_fos = np.broadcast_to(fossa.sdf(*axes), shape)
    d_cistern = Tube(stem_points, stem_radii + 4.0).sdf(*axes)  # brain stem and the cisterns round it
    cavity = smooth_min(smooth_min(d_cer, d_fos, 8.0), d_cistern, 4.0)
    xt, yt, zt = pose.template_coordinates(*axes)
    tent = TENTORIUM
    z_tent = tent["apex_z"] + tent["slope_y"] * (yt - tent["apex_y"]) - tent["slope_x"] * np.abs(xt)
    infra = np.maximum(zt - z_tent, yt - tent["front_y"]) * mm  # < 0 below the tentorium
    midline = np.abs(xt) * np.float32(pose.scale[0])

    # Head: scalp, face and neck, skull, the cavity's CSF.
    head = cavity - np.float32(t_skull + t_scalp)
    paint.sdf(head, _scalp_profile(hu["soft_tissue"], hu["scalp_fat"], t_scalp, fat_mm), BG, _SOFT)
    for shape_, value, _ in face_and_neck(rng, pose, hu["soft_tissue"]):
        paint.shape(shape_, value, BG, _SOFT if value == hu["soft_tissue"] else _OTHER)
    bone = rim_profile(hu["diploe"], hu["cortical_bone"], 1.5, 1.0)
    skull_depth = np.minimum(np.float32(t_skull) - cavity, np.maximum(cavity, 0.0))
    paint.sdf(cavity - np.float32(t_skull), bone(skull_depth), BG, _BONE)
    paint.sdf(cavity, hu["csf"], SS, _CSF)

    # Supratentorial brain (cortex, sulci, white matter), cerebellum.
    d_brain = np.minimum(d_cer, d_fos) + np.float32(rim)
    d_sup = np.maximum(d_brain, np.float32(gap / 2) - infra)
    paint.sdf(d_sup, hu["grey_matter"], BC, _GM)
    found = canvas.region(*cerebrum.bounds())
    sulci = sulcal_distance(rng, pose, canvas, None if found is None else found[0])
    if found is not None and sulci is not None:
        sl = found[0]
        dist, vary = sulci
        depth = -d_sup[sl]
        d_sulcus = np.float32(sulcus_depth) * (1.0 + np.float32(0.3) * vary)
        d_wm = np.maximum(cortex - depth, np.minimum(sulcus_half + cortex - dist, d_sulcus + cortex - depth))
        paint.sdf(d_wm, hu["white_matter"], BC, _WM, sl)
        paint.sdf(np.maximum(np.maximum(dist - sulcus_half, depth - d_sulcus), cavity[sl]), hu["csf"], SS, _CSF, sl)
    else:
        paint.sdf(d_sup + np.float32(cortex), hu["white_matter"], BC, _WM)
    d_cbl = np.maximum(d_brain, infra + np.float32(gap / 2))
    paint.sdf(d_cbl, hu["grey_matter"], CE, _GM)
    paint.sdf(d_cbl + np.float32(rng.uniform(5.0, 8.0)), hu["white_matter"], CE, _WM)
    paint.shape(Tube.through(stem_points, stem_radii), hu["white_matter"], BC, _WM)

    # Deep nuclei around the ventricles: internal capsule, lentiform nucleus, thalamus, caudate nucleus.
    vent = _Ventricles(rng, enlarged, thin)
    jitter = rng.normal(0.0, 1.0, size=(2, 6, 3))
    sizes = rng.uniform(0.9, 1.1, size=(2, 6))
    capsule_mm = rng.uniform(4.5, 6.0)
    for k, side in enumerate((1.0, -1.0)):
        s = np.array([side, 1.0, 1.0])
        j, f = jitter[k], sizes[k]
        ln_center = np.array([22.0 + 0.7 * vent.lateral_push, 2.0, 2.0]) * s + j[0]
        ln_radii = np.array([6.5, 15.0, 10.0]) * f[0]
        ln = pose.ellipsoid(ln_center, ln_radii)
        # < 0 medial to the nucleus, within most of its height
        medial = (
            np.maximum(
                side * xt - np.float32(ln_center[0] * side + 1.0),
                np.abs(zt - np.float32(ln_center[2])) - np.float32(0.75 * ln_radii[2]),
            )
            * mm
        )
        paint.shape(pose.ellipsoid(ln_center, ln_radii + capsule_mm), hu["capsule"], CA, _WM, clip=medial)
        paint.shape(ln, hu["deep_grey"], LN, _DEEP)
        th_center = np.array([vent.third_half + 0.5 + 8.0 + vent.third_push, -12.0, 4.0]) * s + j[1]
        paint.shape(pose.ellipsoid(th_center, np.array([8.0, 13.0, 9.0]) * f[1]), hu["deep_grey"], BC, _DEEP)
        fh, r = vent.body_points(side)
        wall = abs(fh[1, 0]) + r[1]  # lateral wall of the frontal horn at the caudate head
        cn_radii = np.array([5.0 / (1.0 + 0.5 * vent.growth), 10.0, 9.0]) * f[2]  # flattened by a large horn
        cn_head = np.array([wall - 1.5 + cn_radii[0], 15.0, 10.0]) * s + j[2]
        paint.shape(pose.ellipsoid(cn_head, cn_radii), hu["deep_grey"], CN, _DEEP)
        body = np.array([[abs(p[0]) + 0.8 * rr, p[1], p[2] - 0.2 * rr] for p, rr in zip(fh[1:4], r[1:4], strict=True)])
        body = body * s + j[3]
        cn_body = Tube.through(pose.points(body), np.array([4.0, 3.0, 2.0]) * f[3] * pose.mean_scale, 4)
        paint.shape(cn_body, hu["deep_grey"], CN, _DEEP)

    # Sylvian fissure, insular cistern and insular cortex; the interhemispheric fissure.
    fissure_half = rng.uniform(1.0, 1.8)
    syl = rng.uniform([33.0, -1.0, 0.0, 1.0, 10.0], [37.0, 5.0, 5.0, 1.6, 13.0], size=(2, 5))
    for k, side in enumerate((1.0, -1.0)):
        x_ins, y_ins, z_ins, syl_half, r_ins = syl[k]
        x_ins += 0.5 * vent.lateral_push
        ax = side * xt
        ins = _ellipsoid_sdf(pose, axes, (side * (x_ins - r_ins), y_ins, z_ins), (r_ins, 20.0, 13.0))
        cap = (np.float32(x_ins - 0.45 * r_ins) - ax) * mm  # < 0 on the lateral cap
        z_syl = np.float32(z_ins + 4.0) + np.float32(0.5) * (np.float32(y_ins) - yt)
        sheet = np.maximum(
            np.maximum(
                np.abs(zt - z_syl) * (mm / np.float32(1.12)), (np.abs(yt - np.float32(y_ins - 8.0)) - 26.0) * mm
            ),
            (np.float32(x_ins + 1.0) - ax) * mm,
        )
        paint.sdf(np.maximum(sheet - np.float32(syl_half + cortex), d_sup), hu["grey_matter"], BC, _GM)
        paint.sdf(np.maximum(sheet - np.float32(syl_half), cavity), hu["csf"], SS, _CSF)
        co_half = max(1.8, thin)
        cistern = np.maximum(np.abs(ins - np.float32(co_half + 1.2)) - np.float32(max(1.2, thin)), cap)
        paint.sdf(cistern, hu["csf"], SS, _CSF)
        paint.sdf(np.maximum(np.abs(ins) - np.float32(co_half), cap), hu["grey_matter"], CO, _GM)
    # the deep core (corpus callosum and below), kept out of the fissure, raised over enlarged ventricles
    core_center = np.asarray(CORE[0]) + [0.0, 0.0, 0.5 * vent.raise_mm]
    core_radii = np.asarray(CORE[1]) + [0.0, 0.0, 0.5 * vent.raise_mm]
    core = (
        np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip((xt, yt, zt), core_center, core_radii, strict=True)))
        - np.float32(1.0)
    ) * np.float32(CORE[1][1] * pose.mean_scale)
    paint.sdf(np.maximum(np.maximum(midline - (fissure_half + cortex), -core), d_sup), hu["grey_matter"], BC, _GM)
    paint.sdf(np.maximum(np.maximum(midline - fissure_half, -core), d_sup - rim), hu["csf"], SS, _CSF)

    # Ventricular system, then the septum pellucidum between the lateral ventricles.
    lateral = [tube for side in (1.0, -1.0) for tube in vent.lateral(pose, side)]
    for tube in lateral:
        paint.shape(tube, hu["csf"], VS, _CSF)
    third = pose.ellipsoid((0.0, -8.0, 3.0), (vent.third_half, 14.0, 8.0 + 0.2 * vent.height))
    paint.shape(third, hu["csf"], VS, _CSF)
    aqueduct = pose.points([[0.0, -18.0, -6.0], [0.0, -26.0, -22.0], [0.0, -36.0, -38.0]])
    paint.shape(Tube.through(aqueduct, max(1.0, thin)), hu["csf"], VS, _CSF)
    fourth_scale = 1.0 + 0.3 * float(enlarged)
    paint.shape(pose.ellipsoid((0.0, -39.0, -44.0), np.array([6.5, 4.0, 7.0]) * fourth_scale), hu["csf"], VS, _CSF)
    d_lv = Union(lateral[0:2] + lateral[4:6]).sdf(*axes)
    septum = np.maximum(midline - np.float32(vent.sp_half), d_lv - np.float32(vent.sp_half + 1.5))
    paint.sdf(septum, hu["white_matter"], SP, _WM)

    # Central sulcus: a groove from the vertex laterally, downwards and forwards, lined with cortex.
    cs = rng.uniform([-18.0, 0.25, 1.5, 25.0, 0.0, 12.0, 10.0], [-10.0, 0.4, 3.5, 35.0, 2 * np.pi, 17.0, 18.0], (2, 7))
    for k, side in enumerate((1.0, -1.0)):
        y0, slope, amp, wavelength, phase, cs_depth, z_low = cs[k]
        ax = side * xt
        y_cs = (
            np.float32(y0)
            + np.float32(slope) * ax
            + np.float32(amp) * np.sin(ax * np.float32(2 * np.pi / wavelength) + np.float32(phase))
        )
        sheet = np.abs(yt - y_cs) * (mm / np.float32(math.hypot(1.0, slope)))
        bounds = np.maximum(
            np.maximum(-d_sup - np.float32(cs_depth), (np.float32(fissure_half + 2.0) - ax) * mm),
            (np.float32(z_low) - zt) * mm,
        )
        half = max(1.1, thin)
        paint.sdf(
            np.maximum(np.maximum(sheet - np.float32(half + 2.5), bounds - np.float32(2.5)), d_sup),
            hu["grey_matter"],
            BC,
            _GM,
        )
        paint.sdf(np.maximum(sheet - np.float32(half), np.maximum(bounds, d_sup)), hu["csf"], CS, _CSF)

    # Dura and venous sinuses: falx, tentorium, superior sagittal and straight sinuses; transverse sinuses (CE).
    dura_half = np.float32(max(0.5 * rng.uniform(0.8, 1.4), thin))
    # a sickle: above the corpus callosum, its free edge rising anteriorly, down to the tentorium posteriorly
    falx_low = np.maximum(np.float32(-20.0), np.float32(0.35) * yt + np.float32(2.0))
    falx = np.maximum(np.maximum(midline - dura_half, np.float32(3.0) - core), np.maximum(-infra, (falx_low - zt) * mm))
    paint.sdf(np.maximum(falx, cavity), hu["dura"], DV, _DURA)
    tentorium = np.maximum(np.abs(zt - z_tent) * mm - dura_half, (yt - tent["front_y"]) * mm)
    paint.sdf(np.maximum(tentorium, cavity), hu["dura"], DV, _DURA)
    inner = Union([cerebrum, fossa], smoothness=8.0)
    center_t, radii_t = np.asarray(CEREBRUM[0]), np.asarray(CEREBRUM[1])
    center_w = pose.points(center_t)
    theta = np.deg2rad([12.0, 40.0, 70.0, 100.0, 130.0, 160.0, 190.0, 212.0])
    sss_dirs = pose.directions(np.stack([np.zeros_like(theta), np.cos(theta), np.sin(theta)], axis=1) * radii_t)
    sss_radii = np.linspace(2.0, 4.0, len(theta)) * rng.uniform(0.9, 1.1)
    sss = surface_points(inner, center_w, sss_dirs, sss_radii + 0.3)
    paint.shape(Tube.through(sss, sss_radii, 3), hu["venous_blood"], DV, _BLOOD)
    torcular = sss[-1]
    straight = np.array([torcular, pose.points([0.0, -50.0, -14.0]), pose.points([0.0, -36.0, -4.0])])
    paint.shape(Tube.through(straight, [3.0, 2.5, 2.0], 3), hu["venous_blood"], DV, _BLOOD)
    for side in (1.0, -1.0):
        trans_dirs = np.array([[side * 0.4, -0.92, -0.62], [side * 0.75, -0.6, -0.62], [side * 0.95, -0.2, -0.75]])
        trans_dirs = pose.directions(trans_dirs / np.linalg.norm(trans_dirs, axis=1, keepdims=True) * radii_t)
        trans = surface_points(inner, center_w, trans_dirs, 4.3)
        path = np.concatenate([[torcular], trans])
        paint.shape(Tube.through(path, [4.0, 4.0, 4.0, 4.5], 3), hu["venous_blood"], CE, _BLOOD)

    # Nothing is labelled below the foramen magnum; the image gets a smooth non-uniformity, then noise.
    canvas.label[zt <= FORAMEN_MAGNUM_Z] = BG
    clean = canvas.image.copy()
    std = float(rng.uniform(*NON_UNIFORMITY_RANGE))
    image = canvas.image + smooth_random_field(rng, shape, spacing, correlation=60.0, std=std)
    noise_sigma = float(rng.uniform(*NOISE_SIGMA_RANGE))
    image += rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sigma)
    np.clip(image, *HU_CLIP, out=image)
    image = np.rint(image, out=image).astype(np.int16)
    label = canvas.label
    voxel_ml = float(np.prod(spacing)) / 1000.0
    volume = round(float(np.count_nonzero(label == VS)) * voxel_ml, 1)
    fh, r = vent.body_points(1.0)
    evans = float((np.abs(fh[:3, 0]) + r[:3]).max() / CEREBRUM[1][0])
    logger.debug("head CT phantom: shape %s, enlarged ventricles %s, VS %.1f mL", shape, enlarged, volume)
    return {
        "image": image,
        "label": label,
        "enlarged_ventricles": enlarged,
        "ventricle_volume_ml": volume,
        "tissue": paint.tissue,
        "clean": clean,
        "hu": hu,
        "noise_sigma": noise_sigma,
        "evans_index": evans,
        "pose": pose,
    }


def generate_head_ct(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    enlarged_ventricles: float | bool = 0.0,
) -> dict[str, Any]:
    """Generate one synthetic non-contrast head CT case with eleven neuroanatomical labels.

    Stand-in for the data of Cai et al. 2020 (see the module docstring); the phantom generator of the task
    ``head_ct_neuroanatomy``. :func:`generate_head_ct_dense` gives the same case with its ground truth. For the
    paper's secondary iNPH test set, make a data set with ``enlarged_ventricles=1.0``; with the same seed its cases
    are the primary set's heads with enlarged ventricles.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(128, 128, 40)``.
        spacing: voxel size in mm; default ``(1.8, 1.8, 5.0)`` (a 230 x 230 x 200 mm field of view).
        enlarged_ventricles: the probability that a case has enlarged ventricles (iNPH-like, about three to four times
            the ventricular volume); 0 (default) for none, 1 for every case; True or False mean 1 or 0.

    Returns:
        ``image`` int16 ``[X, Y, Z]`` (HU), ``label`` uint8 ``[X, Y, Z]`` with values :data:`HEAD_CT_LABELS`, both
        with affine ``centered_affine(shape, spacing)`` (RAS+), and the datalist fields ``enlarged_ventricles``
        (bool) and ``ventricle_volume_ml`` (the labelled ventricular system's volume, mL, one decimal).

    Raises:
        TypeError: ``enlarged_ventricles`` of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    case = generate_head_ct_dense(rng, shape, spacing, enlarged_ventricles)
    return {key: case[key] for key in ("image", "label", "enlarged_ventricles", "ventricle_volume_ml")}


#: The task this module declares (found by :data:`common.phantoms.registry.PHANTOM_TASKS`).
PHANTOM_TASK = PhantomTask(
    name="head_ct_neuroanatomy",
    generator=generate_head_ct,
    labels=HEAD_CT_LABELS,
    modality={"0": "CT"},
    description=(
        "Synthetic non-contrast head CT phantom (HU) with eleven neuroanatomical labels (brainstem and cerebrum, "
        "caudate nucleus, central sulcus, cerebellum, dural folds and venous sinuses, insular cortex, internal "
        "capsule, lentiform nucleus, septum pellucidum, subarachnoid space, ventricular system) at the paper's class "
        "imbalance, optionally with enlarged (iNPH-like) ventricles, standing in for the data of Cai et al. 2020 "
        "(Radiology: AI), Materials and Methods"
    ),
    dicom_modality="CT",
    defaults={
        "shape": list(DEFAULT_SHAPE),
        "spacing": [float(s) for s in DEFAULT_SPACING],
        "enlarged_ventricles": 0.0,
    },
    version=1,
    fields=("enlarged_ventricles", "ventricle_volume_ml"),
)
