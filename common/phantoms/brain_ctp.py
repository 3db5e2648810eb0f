"""Synthetic brain CT perfusion (4D CT, 19 time points) with sparse 2D tissue annotations and a cranial-cavity mask.

A stand-in for the data of van de Leemput et al., "Multiclass brain tissue segmentation in 4D CT using
convolutional neural networks" (IEEE Access 7, 2019), Sec. III: 19 volumetric CT scans of the head acquired with
different exposures per time point after an intravenous contrast bolus, white matter (WM), grey matter (GM),
cerebrospinal fluid (CSF) and vessels annotated in one to three random orthogonal cross sections per patient
(Sec. III-C), only inside the intracranial soft tissue and without the cerebellum, everything else "not
annotated". It is a phantom for testing the pipeline and demonstrating training, not a model of real anatomy.

Orientation (as every phantom here): arrays ``[X, Y, Z]`` in the NIfTI RAS+ convention with affine
``diag(spacing)`` centred on world 0, so ``i`` grows to the patient's right, ``j`` anterior and ``k`` superior.
The image is ``[X, Y, Z, 19]`` int16 HU, the time points as channels (channels last).

Anatomy (mm, drawn in this order, later over earlier, with partial volume): air; scalp, face and neck soft tissue
(eyes, orbital fat, nasal and sphenoid air, a vertebral column); the skull, a shell of diploe between cortical
tables around the cranial cavity; the cranial cavity (cerebrum, posterior fossa and brain stem) filled with CSF;
the supratentorial brain, a cortical GM ribbon over WM, folded by sulci (CSF clefts lined with GM, sheets normal
to the surface drawn from a random field on the sphere); the cerebellum (GM over a WM core) below a tentorium
gap; deep GM nuclei (caudate, lentiform, thalamus); Sylvian and interhemispheric fissures; the falx and the
tentorium (dura, not annotated); lateral, third and fourth ventricles; the brain stem (WM); veins (superior
sagittal, straight and transverse sinuses, internal cerebral and cortical veins); arteries (internal carotid and
vertebral arteries, basilar, a circle of Willis with anterior, middle and posterior cerebral arteries and
cortical branches).

Contrast passage: each compartment adds an enhancement curve to its unenhanced HU: an arterial gamma-variate
bolus with recirculation peaking at about 20 s (frame 7 of the frame times :data:`FRAME_TIMES_S`, +-1 frame per
case), veins the arterial curve dispersed and delayed (peak about frame 10), GM and WM the arterial curve
convolved with an exponential residue of their mean transit time (GM peak +10..+20 HU, WM +4..+8 HU and at
most half of GM's), soft tissue a slow rise of a few HU, CSF and bone none. White noise per frame scales with
the inverse square root of the frame's relative exposure (:data:`EXPOSURES`); one frame's sigma (9-18 HU) exceeds
the 5-8 HU gap between GM and WM, so only the time course separates them. Optional rigid head motion between
frames (``motion_mm``).

Labels: ``{0: not annotated, 1: CSF, 2: WM, 3: GM, 4: vessel}``; the dense label (every cranial-cavity voxel:
its dominant compartment) is cut to 1-3 axis-aligned planes on distinct axes whose annotation region covers at
least 10 % of the plane (Sec. III-C), and to that region: the cranial cavity without the falx and tentorium and,
by default, without the posterior fossa (cerebellum, brain stem below the tentorium). The ``mask`` is the cranial
cavity (intracranial soft tissue, CSF and vessels above the foramen magnum; Sec. II-B-2).

Thin structures are kept visible on coarse grids: vessels are drawn at least 0.6 voxel in radius, and the cortex
is 3-4 mm thick, so the default 2 mm grid keeps a learnable GM ribbon (the paper's voxels are 0.5 mm).

The template anatomy and its painter live in :mod:`common.phantoms.brain_anatomy`; this module draws a case with
them and adds the contrast passage, motion, noise and the sparse annotations.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from common.phantoms.brain_anatomy import (
    ARTERY,
    CEREBRUM,
    CORE,
    CSF,
    FORAMEN_MAGNUM_Z,
    FOSSA,
    GM,
    HU_RANGES,
    SOFT,
    STEM,
    TENTORIUM,
    VEIN,
    WM,
    Composer,
    draw_pose,
    face_and_neck,
    smooth_min,
    sulcal_distance,
    vessel_trees,
    vessel_tube,
)
from common.phantoms.drawing import (
    Canvas,
    SmoothWarp,
    Tube,
    Union,
    check_grid,
    random_rotation,
    rim_profile,
    rotation_matrix,
    smooth_random_field,
    soft_edge,
)
from common.phantoms.registry import PhantomTask

__all__ = [
    "generate_brain_ctp",
    "generate_brain_ctp_dense",
    "rigidly_move_volume",
    "BRAIN_CTP_LABELS",
    "HU_RANGES",
    "ENHANCEMENT_RANGES",
    "FRAME_TIMES_S",
    "EXPOSURES",
    "N_TIME_POINTS",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_TASK",
]

logger = logging.getLogger(__name__)

DEFAULT_SHAPE = (96, 112, 96)
DEFAULT_SPACING = (2.0, 2.0, 2.0)
N_TIME_POINTS = 19

BRAIN_CTP_LABELS = {0: "not annotated", 1: "CSF", 2: "white matter", 3: "grey matter", 4: "vessel"}

#: Acquisition time (s after the start of the injection) of each frame: a baseline scan, 13 scans every 2 s over
#: the first pass, 5 scans every 5 s over the wash-out; the whole run takes under a minute (Sec. III-A).
FRAME_TIMES_S = (0.0, *(8.0 + 2.0 * np.arange(13)), *(37.0 + 5.0 * np.arange(5)))
#: Relative exposure (tube current-time product) of each frame: a higher-dose baseline, low-dose first-pass frames
#: and medium-dose wash-out frames ("different exposures per time point", Sec. III-A). Noise ~ exposure^-1/2.
EXPOSURES = (2.0, *([1.0] * 13), *([1.5] * 5))

#: Range (HU) of each compartment's peak enhancement over its unenhanced value.
ENHANCEMENT_RANGES = {
    "artery": (300.0, 500.0),
    "vein": (250.0, 420.0),
    "grey_matter": (10.0, 20.0),
    "white_matter": (4.0, 8.0),
    "soft_tissue": (3.0, 8.0),
}
#: Per-case noise sigma (HU) of a frame of relative exposure 1.
NOISE_SIGMA_RANGE = (13.0, 18.0)
AIR_HU = -1000.0
HU_CLIP = (-1024.0, 3071.0)


def _gamma_variate(t: np.ndarray, t0: float, t_peak: float, alpha: float) -> np.ndarray:
    """Return a gamma-variate bolus of unit peak: ``(s e^(1 - s))^alpha``, ``s = (t - t0) / (t_peak - t0)``.

    Args:
        t: times (s).
        t0: arrival time (s).
        t_peak: time of the peak (s), after ``t0``.
        alpha: shape (larger: narrower).

    Returns:
        the curve at ``t``.
    """
    s = np.clip((t - t0) / (t_peak - t0), 0.0, None)
    return np.where(s > 0, (s * np.exp(1.0 - s)) ** alpha, 0.0)


def _enhancement_curves(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw the case's enhancement curves (HU over the unenhanced value) at :data:`FRAME_TIMES_S`.

    The arterial input is a gamma variate plus a smaller, later, wider recirculation; veins are the arterial curve
    convolved with a gamma transit kernel; GM, WM and soft tissue the arterial curve convolved with an exponential
    residue function of their mean transit time (indicator-dilution theory), each scaled to its drawn peak.

    Args:
        rng: the random generator.

    Returns:
        compartment name -> ``(19,)`` enhancement in HU.
    """
    dt = 0.1
    t = np.arange(0.0, 75.0, dt)
    t_peak = 20.0 + rng.uniform(-2.0, 2.0)  # frame 7 +- 1 frame
    rise = rng.uniform(5.0, 8.0)
    alpha = rng.uniform(2.5, 4.0)
    arterial = _gamma_variate(t, t_peak - rise, t_peak, alpha)
    recirculation = rng.uniform(0.15, 0.3) * _gamma_variate(t, t_peak + 4.0, t_peak + 14.0, 2.0)
    arterial = arterial + recirculation

    def convolve(kernel: np.ndarray) -> np.ndarray:
        out = np.convolve(arterial, kernel / kernel.sum())[: t.size]
        return out / out.max()

    venous_delay = rng.uniform(4.5, 6.0)  # mean of the gamma transit kernel (shape 4)
    venous = convolve(t**3 * np.exp(-t / (venous_delay / 4.0)))
    mtt = {"grey_matter": rng.uniform(3.0, 4.5), "white_matter": rng.uniform(4.5, 6.5), "soft_tissue": 25.0}
    residue = {name: np.exp(-t / value) for name, value in mtt.items()}
    shapes = {
        "artery": arterial / arterial.max(),
        "vein": venous,
        **{name: convolve(r) for name, r in residue.items()},
    }
    peaks = {name: rng.uniform(*ENHANCEMENT_RANGES[name]) for name in shapes}
    # grey matter holds two to three times the blood volume of white matter: keep its peak at least twice WM's
    peaks["white_matter"] = min(peaks["white_matter"], peaks["grey_matter"] / 2.0)  # stays within 4-8 HU
    frames = np.asarray(FRAME_TIMES_S)
    return {
        name: np.float32(peaks[name]) * np.interp(frames, t, curve).astype(np.float32) for name, curve in shapes.items()
    }


def _check_kwargs(shape: Any, spacing: Any, motion_mm: Any, n_sections: Any) -> tuple:
    """Check the generator's arguments.

    Args:
        shape: array shape.
        spacing: voxel size in mm.
        motion_mm: largest head translation (mm) and rotation (degrees) between frames.
        n_sections: ``(least, most)`` annotated cross sections per case.

    Returns:
        ``(shape, spacing, motion_mm, (least, most))`` normalised.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """
    shape, spacing = check_grid(shape, spacing)
    if isinstance(motion_mm, bool) or not isinstance(motion_mm, (int, float, np.number)):
        raise TypeError(f"motion_mm={motion_mm!r}; expected a number >= 0")
    if not math.isfinite(motion_mm) or motion_mm < 0:
        raise ValueError(f"motion_mm={motion_mm!r}; expected a number >= 0")
    sections = [n_sections] * 2 if isinstance(n_sections, (int, np.integer)) else n_sections
    if not isinstance(sections, (list, tuple)) or len(sections) != 2:
        raise TypeError(f"n_sections={n_sections!r}; expected an integer or a (least, most) pair")
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in sections):
        raise TypeError(f"n_sections={n_sections!r}; expected integers")
    if not 1 <= sections[0] <= sections[1] <= 3:
        raise ValueError(f"n_sections={n_sections!r}; expected 1 <= least <= most <= 3 (one plane per axis)")
    return (
        shape,
        spacing,
        float(motion_mm),
        (int(sections[0]), int(sections[1])),
    )


def _annotate_sections(
    rng: np.random.Generator, region: np.ndarray, dense: np.ndarray, least: int, most: int
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Cut the dense label to ``least``-``most`` random orthogonal cross sections, as the paper's annotators did.

    Each section's axis is drawn among the axes not used yet, its index among the planes where the annotation
    region covers at least 10 % of the plane (Sec. III-C); inside the region the plane gets the dense label.

    Args:
        rng: the random generator.
        region: bool ``[X, Y, Z]``, where annotations may be.
        dense: the dense label.
        least: the fewest sections.
        most: the most sections (<= 3).

    Returns:
        the sparse label (0 elsewhere) and the ``(axis, index)`` of each section.
    """
    n = int(rng.integers(least, most + 1))
    sections = []
    label = np.zeros(dense.shape, dtype=np.uint8)
    for axis in rng.permutation(3)[:n]:
        coverage = region.mean(axis=tuple(a for a in range(3) if a != axis))
        candidates = np.flatnonzero(coverage >= 0.10)
        if candidates.size == 0:
            candidates = np.array([int(coverage.argmax())])
        index = int(candidates[rng.integers(candidates.size)])
        sections.append((int(axis), index))
        plane = tuple(index if a == axis else slice(None) for a in range(3))
        label[plane] = np.where(region[plane], dense[plane], 0)
    return label, sections


def _render_frames(
    rng: np.random.Generator,
    image: np.ndarray,
    maps: np.ndarray,
    spacing: Sequence[float],
    motion_mm: float,
    center: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, list]:
    """Render the 19 frames: static image plus each compartment's fraction times its enhancement, motion, noise.

    Args:
        rng: the random generator.
        image: the static (unenhanced, noise-free) image, float32 ``[X, Y, Z]``.
        maps: the compartment fractions, ``[6, X, Y, Z]``.
        spacing: voxel size in mm.
        motion_mm: largest motion of frames ``t > 0`` (mm and degrees).
        center: world centre of the head's rotation.

    Returns:
        the int16 image ``[X, Y, Z, 19]``, the enhancement curves, the noise sigma per frame and the motion of
        frames 1-18 as ``(rotation, translation)``.
    """
    curves = _enhancement_curves(rng)
    enhancing = {SOFT: "soft_tissue", WM: "white_matter", GM: "grey_matter", ARTERY: "artery", VEIN: "vein"}
    frames = np.empty((N_TIME_POINTS, *image.shape), dtype=np.float32)
    for t in range(N_TIME_POINTS):
        frame = frames[t]
        frame[...] = image
        for index, name in enhancing.items():
            frame += maps[index] * curves[name][t]
    motion = []
    for t in range(1, N_TIME_POINTS):
        # drawn even without motion, so that motion_mm changes nothing else of the case
        rotation = random_rotation(rng, motion_mm)
        direction = rng.normal(size=3)
        translation = direction / np.linalg.norm(direction) * rng.uniform(0.0, motion_mm)
        motion.append((rotation, translation))
        if motion_mm > 0:
            frames[t] = rigidly_move_volume(frames[t], spacing, rotation, translation, center, AIR_HU)
    noise_sigma = rng.uniform(*NOISE_SIGMA_RANGE) / np.sqrt(np.asarray(EXPOSURES))
    for t in range(N_TIME_POINTS):
        frames[t] += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sigma[t])
    np.clip(frames, *HU_CLIP, out=frames)
    out = np.ascontiguousarray(np.moveaxis(np.rint(frames, out=frames).astype(np.int16), 0, -1))
    return out, curves, noise_sigma, motion


def generate_brain_ctp_dense(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    motion_mm: float = 0.0,
    n_sections: Sequence[int] | int = (1, 3),
    exclude_posterior_fossa: bool = True,
) -> dict[str, Any]:
    """Generate one synthetic 4D CT perfusion case with its dense ground truth (for tests and figures).

    Stand-in for the data of van de Leemput et al. (2019), Sec. III (see the module docstring). Draws exactly
    what :func:`generate_brain_ctp` draws (same ``rng`` use), so the ``image``, ``label`` and ``mask`` entries equal
    that function's output for the same generator state.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(96, 112, 96)``.
        spacing: voxel size in mm; default 2 mm (a 192 x 224 x 192 mm field of view round a head of about
            160 x 200 x 175 mm).
        motion_mm: largest rigid head motion of frames ``t > 0`` relative to ``t = 0``: translation up to this
            many mm and rotation up to this many degrees (0: no motion). The label and mask are in frame 0.
        n_sections: ``(least, most)`` annotated cross sections per case (or one number), at most one per axis.
        exclude_posterior_fossa: leave the cerebellum and brain stem below the tentorium unannotated (Sec. III-C).

    Returns:
        a dict with ``image`` int16 ``[X, Y, Z, 19]`` (HU), ``label`` uint8 ``[X, Y, Z]`` (sparse, 0 = not
        annotated), ``mask`` uint8 ``[X, Y, Z]`` (cranial cavity), and the ground truth: ``dense_label`` uint8
        (every cranial-cavity voxel labelled 1-4), ``artery`` and ``vein`` (bool, the vessel voxels of each tree),
        ``purity`` (float32, the dominant compartment's fraction per voxel), ``annotation_region`` (bool),
        ``sections`` (list of ``(axis, index)``), ``frame_times`` (s), ``curves`` (compartment -> ``(19,)`` HU
        enhancement), ``noise_sigma`` (``(19,)`` HU), ``hu`` (unenhanced HU per tissue), ``motion`` (frames 1-18:
        ``(rotation, translation)`` as passed to :func:`rigidly_move_volume`) and ``motion_center`` (its centre).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    shape, spacing, motion_mm, (least, most) = _check_kwargs(shape, spacing, motion_mm, n_sections)
    if not isinstance(exclude_posterior_fossa, (bool, np.bool_)):
        raise TypeError(f"exclude_posterior_fossa={exclude_posterior_fossa!r}; expected True or False")
    canvas = Canvas(shape, spacing, background=AIR_HU)
    comp = Composer(canvas)
    edge = canvas.edge
    pose = draw_pose(rng)
    mm = pose.mean_scale

    # Unenhanced HU (GM = WM + a 5-8 HU gap, within 33-38 HU).
    hu = {name: float(rng.uniform(*HU_RANGES[name])) for name in ("white_matter", "csf", "blood", "soft_tissue")}
    hu["grey_matter"] = float(np.clip(hu["white_matter"] + rng.uniform(*HU_RANGES["gm_wm_gap"]), 33.0, 38.0))
    bone = rim_profile(rng.uniform(*HU_RANGES["diploe"]), rng.uniform(*HU_RANGES["cortical_bone"]), 1.5, 1.0)
    t_skull, t_scalp = rng.uniform(5.0, 8.0), rng.uniform(4.0, 7.0)
    rim, gap = rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.0)  # subarachnoid space, tentorium
    cortex, sulcus_half, sulcus_depth = rng.uniform(3.0, 4.0), rng.uniform(0.9, 1.6), rng.uniform(12.0, 18.0)

    # Full-grid distances: cerebrum (smoothly deformed), posterior fossa, brain stem; the cranial cavity.
    axes = (canvas.axes[0][:, None, None], canvas.axes[1][None, :, None], canvas.axes[2][None, None, :])
    cerebrum = pose.ellipsoid(*CEREBRUM, warp=SmoothWarp(rng, 4.0, 110.0))
    fossa = pose.ellipsoid(*FOSSA, warp=SmoothWarp(rng, 2.5, 80.0))
    stem_points, stem_radii = pose.points(STEM[0]), STEM[1] * mm
    d_cer = np.broadcast_to(cerebrum.sdf(*axes), shape)
    d_fos = np.broadcast_to(fossa.sdf(*axes), shape)
    d_cistern = Tube(stem_points, stem_radii + 4.0).sdf(*axes)  # brain stem and the cisterns round it
    cavity = smooth_min(smooth_min(d_cer, d_fos, 8.0), d_cistern, 4.0)
    xt, yt, zt = pose.template_coordinates(*axes)
    tent = TENTORIUM
    z_tent = tent["apex_z"] + tent["slope_y"] * (yt - tent["apex_y"]) - tent["slope_x"] * np.abs(xt)
    infra = np.maximum(zt - z_tent, yt - tent["front_y"]) * np.float32(mm)  # < 0 below the tentorium
    above_foramen = zt > FORAMEN_MAGNUM_Z
    full = (slice(None),) * 3

    # Head: soft tissue, face and neck, skull.
    head = cavity - np.float32(t_skull + t_scalp)
    comp.paint_sdf(full, head, hu["soft_tissue"], SOFT)
    for shape_, value, compartment in face_and_neck(rng, pose, hu["soft_tissue"]):
        comp.paint_shape(shape_, value, compartment)
    skull_depth = np.minimum(np.float32(t_skull) - cavity, np.maximum(cavity, 0.0))
    comp.paint(full, soft_edge(cavity - np.float32(t_skull), edge), bone(skull_depth), None)

    # Cranial cavity (CSF), supratentorial brain (GM ribbon, sulci, WM), cerebellum.
    comp.paint_sdf(full, cavity, hu["csf"], CSF)
    d_brain = np.minimum(d_cer, d_fos) + np.float32(rim)
    d_sup = np.maximum(d_brain, np.float32(gap / 2) - infra)
    comp.paint_sdf(full, d_sup, hu["grey_matter"], GM)
    found = canvas.region(*cerebrum.bounds())
    sulci = sulcal_distance(rng, pose, canvas, None if found is None else found[0])
    if found is not None and sulci is not None:
        sl = found[0]
        dist, vary = sulci
        depth = -d_sup[sl]
        d_sulcus = np.float32(sulcus_depth) * (1.0 + np.float32(0.3) * vary)
        d_wm = np.maximum(cortex - depth, np.minimum(sulcus_half + cortex - dist, d_sulcus + cortex - depth))
        comp.paint_sdf(sl, d_wm, hu["white_matter"], WM)
        comp.paint_sdf(sl, np.maximum(np.maximum(dist - sulcus_half, depth - d_sulcus), cavity[sl]), hu["csf"], CSF)
    else:
        comp.paint_sdf(full, d_sup + np.float32(cortex), hu["white_matter"], WM)
    d_cbl = np.maximum(d_brain, infra + np.float32(gap / 2))
    comp.paint_sdf(full, d_cbl, hu["grey_matter"], GM)
    comp.paint_sdf(full, d_cbl + np.float32(rng.uniform(6.0, 9.0)), hu["white_matter"], WM)

    # Deep grey matter, fissures, ventricles, brain stem.
    for side in (1.0, -1.0):
        for center, radii in (((15, 16, 16), (6, 11, 9)), ((27, 3, 2), (6, 14, 9)), ((10, -14, 6), (9, 14, 9))):
            jitter = rng.normal(0.0, 1.5, size=3)
            nucleus = pose.ellipsoid(np.array(center) * [side, 1, 1] + jitter, np.array(radii) * rng.uniform(0.9, 1.1))
            comp.paint_shape(nucleus, hu["grey_matter"], GM, clip=d_sup)
    for side in (1.0, -1.0):
        tilt = rotation_matrix((rng.uniform(-20.0, -10.0), 0.0, side * rng.uniform(0.0, 10.0)))
        center, radii = np.array([side * 45.0, 0.0, -8.0]), np.array([rng.uniform(2.0, 3.5), 24.0, 5.0])
        comp.paint_shape(pose.ellipsoid(center, radii + cortex, tilt), hu["grey_matter"], GM, clip=d_sup)
        comp.paint_shape(pose.ellipsoid(center, radii, tilt), hu["csf"], CSF, clip=cavity)
    fissure_half = rng.uniform(1.0, 2.0)
    core = (
        np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip((xt, yt, zt), *CORE, strict=True))) - np.float32(1.0)
    ) * np.float32(CORE[1][1] * mm)
    midline = np.abs(xt) * np.float32(pose.scale[0])
    comp.paint_sdf(full, np.maximum(np.maximum(midline - (fissure_half + cortex), -core), d_sup), hu["grey_matter"], GM)
    comp.paint_sdf(full, np.maximum(np.maximum(midline - fissure_half, -core), d_sup - rim), hu["csf"], CSF)
    # Dura (soft tissue, left out of the annotations): the falx in the fissure, the tentorium over the cerebellum.
    dura_half = np.float32(0.5 * rng.uniform(0.8, 1.4))
    falx = np.maximum(np.maximum(midline - dura_half, -core), np.maximum(-infra, (-20.0 - zt) * np.float32(mm)))
    comp.paint_sdf(full, np.maximum(falx, cavity), hu["soft_tissue"], SOFT)
    tentorium = np.maximum(np.abs(zt - z_tent) * np.float32(mm) - dura_half, (yt - tent["front_y"]) * np.float32(mm))
    comp.paint_sdf(full, np.maximum(tentorium, cavity), hu["soft_tissue"], SOFT)
    ventricle_scale = rng.uniform(0.8, 1.5)
    for side in (1.0, -1.0):
        s = np.array([side, 1.0, 1.0])
        body = np.array([[10, 30, 12], [12, 18, 18], [14, 0, 22], [17, -20, 18], [22, -30, 8], [17, -48, 6]]) * s
        temporal = np.array([[22, -30, 8], [30, -22, -8], [33, -5, -20], [32, 8, -24]]) * s
        for points, radii in ((body, [4.0, 6.0, 5.0, 5.0, 7.0, 3.0]), (temporal, [5.0, 3.5, 3.0, 2.5])):
            tube = vessel_tube(pose, rng, points, np.array(radii) * ventricle_scale * mm, 0.0)
            comp.paint_shape(tube, hu["csf"], CSF, clip=cavity)
    third = pose.ellipsoid((0.0, -6.0, 4.0), (2.5 * ventricle_scale, 14.0, 9.0))
    comp.paint_shape(third, hu["csf"], CSF)
    comp.paint_shape(Tube.through(stem_points, stem_radii), hu["white_matter"], WM)
    comp.paint_shape(pose.ellipsoid((0.0, -40.0, -45.0), (7.0, 4.0, 8.0)), hu["csf"], CSF)

    # Vessels: veins, then arteries.
    r_min = 0.6 * float(np.mean(spacing))
    arteries, veins = vessel_trees(rng, pose, Union([cerebrum, fossa], smoothness=8.0), r_min)
    for tube in veins:
        comp.paint_shape(tube, hu["blood"], VEIN)
    for tube in arteries:
        comp.paint_shape(tube, hu["blood"], ARTERY)

    # Smooth non-uniformity (static), then the ground truth from the compartment fractions.
    canvas.image += smooth_random_field(rng, shape, spacing, correlation=50.0, std=float(rng.uniform(1.0, 2.0)))
    maps = comp.maps
    mask = (cavity <= 0) & above_foramen
    tissue = np.stack([maps[CSF], maps[WM], maps[GM], maps[ARTERY] + maps[VEIN]])
    dense = np.where(mask, tissue.argmax(axis=0) + 1, 0).astype(np.uint8)
    purity = np.where(mask, tissue.max(axis=0), 0.0).astype(np.float32)
    region = mask & (maps[SOFT] < 0.25)  # without the falx and tentorium (Sec. III-C)
    if exclude_posterior_fossa:
        region &= (infra > 0) & ((d_cistern > 0) | (zt > tent["apex_z"]))  # the posterior fossa's contents

    label, sections = _annotate_sections(rng, region, dense, least, most)
    image, curves, noise_sigma, motion = _render_frames(rng, canvas.image, maps, spacing, motion_mm, pose.shift)
    logger.debug("brain CTP phantom: shape %s, spacing %s, sections %s", shape, spacing, sections)
    vessel = dense == 4
    return {
        "image": image,
        "label": label,
        "mask": mask.astype(np.uint8),
        "dense_label": dense,
        "artery": vessel & (maps[ARTERY] >= maps[VEIN]),
        "vein": vessel & (maps[VEIN] > maps[ARTERY]),
        "purity": purity,
        "annotation_region": region,
        "sections": sections,
        "frame_times": np.asarray(FRAME_TIMES_S),
        "curves": curves,
        "noise_sigma": noise_sigma,
        "hu": hu,
        "motion": motion,
        "motion_center": pose.shift.copy(),
    }


def generate_brain_ctp(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    motion_mm: float = 0.0,
    n_sections: Sequence[int] | int = (1, 3),
    exclude_posterior_fossa: bool = True,
) -> dict[str, np.ndarray]:
    """Generate one synthetic 4D CT perfusion case: 19 frames, sparse 2D tissue annotations, cranial-cavity mask.

    Stand-in for the data of van de Leemput et al. (2019), Sec. III; the phantom generator of the task
    ``brain_ctp_tissue``. :func:`generate_brain_ctp_dense` gives the same case with its dense ground truth.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(96, 112, 96)``.
        spacing: voxel size in mm; default ``(2, 2, 2)``.
        motion_mm: largest rigid head motion of frames ``t > 0`` (mm and degrees); 0 for none.
        n_sections: ``(least, most)`` annotated cross sections per case, at most one per axis.
        exclude_posterior_fossa: leave the cerebellum and brain stem below the tentorium unannotated.

    Returns:
        ``image`` int16 ``[X, Y, Z, 19]`` (HU, time points as channels), ``label`` uint8 ``[X, Y, Z]`` with values
        :data:`BRAIN_CTP_LABELS` (0 = not annotated) on 1-3 axis-aligned planes, and ``mask`` uint8 ``[X, Y, Z]``
        (1 in the cranial cavity), all with affine ``centered_affine(shape, spacing)`` (RAS+).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: an argument out of range.
    """  # noqa: DOC502 (raised by the argument check)
    case = generate_brain_ctp_dense(rng, shape, spacing, motion_mm, n_sections, exclude_posterior_fossa)
    return {"image": case["image"], "label": case["label"], "mask": case["mask"]}


def rigidly_move_volume(
    volume: np.ndarray,
    spacing: Sequence[float],
    rotation: np.ndarray,
    translation: Sequence[float],
    center: Sequence[float] = (0.0, 0.0, 0.0),
    fill: float = 0.0,
) -> np.ndarray:
    """Move the content of a volume rigidly (trilinear resampling with ``torch.nn.functional.grid_sample``).

    Simulates head motion between the time points of a 4D CT (van de Leemput et al. 2019, Sec. III-B registers
    it away): a point at world ``p`` moves to ``R (p - center) + center + translation``. World coordinates are
    those of :func:`~common.phantoms.drawing.centered_affine` (the volume's centre at 0). Computed in float32 on
    the CPU (the phantoms are numpy arrays).

    Args:
        volume: ``[X, Y, Z]`` array.
        spacing: voxel size in mm.
        rotation: 3 x 3 rotation matrix.
        translation: (3,) translation in mm.
        center: the world centre of the rotation (mm).
        fill: the value for voxels moved in from outside the volume.

    Returns:
        the moved volume, float32 ``[X, Y, Z]``.

    Raises:
        ValueError: ``volume`` is not 3D, or ``rotation`` is not 3 x 3.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume of shape {volume.shape}; expected [X, Y, Z]")
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation of shape {rot.shape}; expected 3 x 3")
    n = np.asarray(volume.shape, dtype=np.float64)
    h = np.asarray(spacing, dtype=np.float64) * np.maximum(n - 1.0, 1.0) / 2.0  # mm per normalised unit
    # output normalised coords m -> world p = h m (centred) -> source q = R^T (p - c - d) + c -> normalised q / h
    a = (rot.T * h[None, :]) / h[:, None]
    b = (rot.T @ (-np.asarray(center) - np.asarray(translation)) + np.asarray(center)) / h
    perm = [2, 1, 0]  # grid_sample's (x, y, z) index the last, middle and first array axes
    theta = np.concatenate([a[np.ix_(perm, perm)], b[perm][:, None]], axis=1)
    src = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None] - fill
    grid = torch.nn.functional.affine_grid(
        torch.as_tensor(theta, dtype=src.dtype)[None], list(src.shape), align_corners=True
    )
    moved = torch.nn.functional.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return (moved[0, 0] + fill).numpy()


#: The task this module declares (found by :data:`common.phantoms.registry.PHANTOM_TASKS`).
PHANTOM_TASK = PhantomTask(
    name="brain_ctp_tissue",
    generator=generate_brain_ctp,
    labels=BRAIN_CTP_LABELS,
    modality={str(t): f"CT t{t}" for t in range(N_TIME_POINTS)},
    description=(
        "Synthetic 4D CT perfusion phantom of the head (19 time points as channels, HU) with CSF, white matter, "
        "grey matter and vessel labels on 1-3 sparse orthogonal cross sections and a cranial-cavity mask, standing "
        "in for the data of van de Leemput et al. 2019 (IEEE Access), Sec. III"
    ),
    dicom_modality="CT",
    defaults={
        "shape": list(DEFAULT_SHAPE),
        "spacing": [float(s) for s in DEFAULT_SPACING],
        "motion_mm": 0.0,
        "n_sections": [1, 3],
        "exclude_posterior_fossa": True,
    },
    version=1,
    n_channels=N_TIME_POINTS,
    channel_layout="last",
    ignore_value=0,
    masks={"mask": "cranial cavity"},
)
