"""Synthetic contrast-enhanced abdominal CT (portal-venous phase) with seven labelled structures.

A stand-in for the data of Roth et al., "Deep learning and its application to medical image segmentation"
(Medical Imaging Technology, 2018), Sec. III.A: portal-venous CT of the upper abdomen with the arteries, portal
vein, liver, spleen, stomach, gallbladder and pancreas delineated. It is a phantom for testing pipelines and
demonstrating training, not a model of real anatomy.

Orientation (stated once, used throughout): arrays are ``[X, Y, Z]`` in the NIfTI RAS+ convention with affine
``diag(spacing)`` (origin: the volume's centre at world 0, see :func:`~common.phantoms.drawing.centered_affine`),
so the array index ``i`` increases towards the patient's **right**, ``j`` towards **anterior** and ``k`` towards
**superior**. The liver therefore has larger ``i`` than the spleen and the spine has small ``j``. (DICOM/LPS
readers flip x and y; MONAI's readers convert back to RAS.)

Anatomy (all in mm, drawn in this priority order, later over earlier): air; elliptical body with subcutaneous fat,
muscle wall and visceral fat; paraspinal and psoas muscles; lung bases; ribs; vertebral column (cancellous bone
with a brighter cortical rim, discs, spinal canal); kidneys (cortex brighter than medulla, unlabelled); bowel
(colon, duodenum, small-bowel loops, gas pockets; unlabelled); liver (3) with hepatic veins (kept in the liver
label); stomach (5) with an optional air-fluid level; spleen (4); pancreas (7); gallbladder (6); inferior vena
cava (unlabelled); portal venous system (2: portal trunk, intrahepatic branches, splenic and superior mesenteric
veins); arteries (1: aorta, coeliac trunk, hepatic and splenic arteries, superior mesenteric artery).

Per case: each structure's mean HU is drawn in its range (:data:`HU_RANGES`), each organ's size is scaled by
+-15 %, shifted by +-10 mm per axis and smoothly deformed; vessels follow the organs they join; white Gaussian
noise has a per-case sigma in 15-30 HU over a mild smooth non-uniformity. Liver, spleen and pancreas, and artery
and portal vein, overlap in intensity, so thresholding cannot separate them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from common.phantoms.drawing import (
    Canvas,
    Difference,
    Ellipsoid,
    HalfSpace,
    Intersection,
    Shape,
    SmoothWarp,
    Tube,
    Union,
    random_rotation,
    rim_profile,
    rotation_matrix,
    smooth_random_field,
)
from common.phantoms.registry import PhantomTask

__all__ = [
    "generate_abdominal_ct",
    "ABDOMINAL_CT_LABELS",
    "HU_RANGES",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_TASK",
]

logger = logging.getLogger(__name__)

DEFAULT_SHAPE = (256, 256, 120)
DEFAULT_SPACING = (1.5, 1.5, 2.0)

ABDOMINAL_CT_LABELS = {
    0: "background",
    1: "artery",
    2: "portal vein",
    3: "liver",
    4: "spleen",
    5: "stomach",
    6: "gallbladder",
    7: "pancreas",
}

#: Range (HU) from which each structure's mean value is drawn per case (portal-venous phase).
HU_RANGES = {
    "fat": (-110.0, -90.0),
    "muscle": (40.0, 60.0),
    "lung": (-870.0, -820.0),
    "cancellous_bone": (300.0, 400.0),
    "cortical_bone": (700.0, 1000.0),
    "disc": (70.0, 100.0),
    "csf": (5.0, 20.0),
    "kidney_cortex": (165.0, 185.0),
    "kidney_medulla": (145.0, 165.0),
    "bowel": (20.0, 40.0),
    "liver": (105.0, 115.0),
    "hepatic_vein": (140.0, 170.0),
    "stomach_contents": (6.0, 28.0),
    "stomach_wall": (60.0, 90.0),
    "spleen": (117.0, 127.0),
    "pancreas": (95.0, 105.0),
    "gallbladder": (6.0, 15.0),
    "ivc": (135.0, 165.0),
    "portal_vein": (165.0, 182.0),
    "artery": (185.0, 210.0),
}

AIR_HU = -1000.0
NOISE_SIGMA_RANGE = (15.0, 30.0)
HU_CLIP = (-1024.0, 3071.0)


class _Variation:
    """Per-case random size, position and shape of each structure (draws from one generator, in a fixed order)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def hu(self, name: str) -> float:
        """Draw a structure's mean HU from its range.

        Args:
            name: a key of :data:`HU_RANGES`.

        Returns:
            the value.
        """
        lo, hi = HU_RANGES[name]
        return float(self.rng.uniform(lo, hi))

    def shift(self, mm: float = 10.0) -> np.ndarray:
        """Draw a shift of up to ``mm`` per axis.

        Args:
            mm: the largest shift per axis.

        Returns:
            the shift (3,) in mm.
        """
        return self.rng.uniform(-mm, mm, size=3)

    def scale(self, frac: float = 0.15) -> float:
        """Draw a scale factor in ``1 +- frac``.

        Args:
            frac: the largest relative change.

        Returns:
            the factor.
        """
        return float(self.rng.uniform(1.0 - frac, 1.0 + frac))

    def organ(
        self,
        center: Sequence[float],
        radii: Sequence[float],
        angles: Sequence[float] = (0.0, 0.0, 0.0),
        exponent: float = 2.0,
        body: np.ndarray | None = None,
    ) -> tuple[Ellipsoid, np.ndarray, float]:
        """Draw a smoothly deformed (super)ellipsoid, resized by +-15 % and shifted by +-10 mm.

        Args:
            center: the centre in mm (scaled by ``body`` when given).
            radii: the radii in mm.
            angles: rotation angles in degrees.
            exponent: the superellipsoid exponent.
            body: the body's (x, y, 1) scale, or None.

        Returns:
            the shape, its shift (mm) and its scale factor.
        """
        rng = self.rng
        shift, s = self.shift(), self.scale()
        r = np.asarray(radii, dtype=np.float64) * s * rng.uniform(0.95, 1.05, size=3)
        rot = rotation_matrix(angles) @ random_rotation(rng, 8.0)
        mean_r = float(np.mean(r))
        warp = SmoothWarp(rng, amplitude=0.12 * mean_r, wavelength=2.5 * mean_r)
        c = np.asarray(center, dtype=np.float64) * (1.0 if body is None else body) + shift
        return Ellipsoid(c, r, rot, exponent, warp), shift, s

    def tube_organ(
        self,
        points: Sequence[Sequence[float]],
        radii: Sequence[float],
        jitter: float = 4.0,
        body: np.ndarray | None = None,
    ) -> tuple[Tube, np.ndarray, float]:
        """Draw a tube-like organ: control points scaled about their centroid by +-15 %, shifted, and jittered.

        Args:
            points: control points in mm.
            radii: radius at each control point in mm.
            jitter: standard deviation of the points' jitter in mm.
            body: the body's (x, y, 1) scale, or None.

        Returns:
            the tube, its shift (mm) and its scale factor.
        """
        rng = self.rng
        shift, s = self.shift(), self.scale()
        pts = np.asarray(points, dtype=np.float64) * (1.0 if body is None else body)
        centroid = pts.mean(axis=0)
        pts = centroid + (pts - centroid) * s + shift + rng.normal(0.0, jitter, size=pts.shape)
        r = np.asarray(radii, dtype=np.float64) * s * rng.uniform(0.9, 1.1, size=len(pts))
        return Tube.through(pts, r), shift, s

    def vessel(self, points: Sequence[Sequence[float]], radii: Sequence[float], jitter: float = 2.5) -> Tube:
        """Draw a vessel through given control points (already placed), jittered inside, radii +-15 %.

        Args:
            points: control points in mm; the end points are kept.
            radii: radius at each control point in mm.
            jitter: standard deviation of the interior points' jitter in mm.

        Returns:
            the tube.
        """
        pts = np.array(points, dtype=np.float64)
        noise = self.rng.normal(0.0, jitter, size=pts.shape)
        noise[[0, -1]] = 0.0
        r = np.asarray(radii, dtype=np.float64) * self.scale()
        return Tube.through(pts + noise, r)


def _body_layers(v: _Variation) -> tuple[list[tuple[Shape, float]], Shape, np.ndarray, np.ndarray]:
    """Draw the body outline, muscle wall and abdominal cavity.

    Args:
        v: the case's random variation.

    Returns:
        the (shape, HU) layers, the cavity, the body's (x, y, 1) scale and the muscle layer's radii.
    """
    body_scale = np.array([v.rng.uniform(0.93, 1.07), v.rng.uniform(0.93, 1.07), 1.0])
    radii = np.array([160.0, 115.0, np.inf]) * body_scale
    center = np.array([0.0, -8.0, 0.0]) + np.array([v.rng.uniform(-5, 5), v.rng.uniform(-5, 5), 0.0])
    fat, wall = v.rng.uniform(12.0, 28.0), v.rng.uniform(8.0, 14.0)
    muscle_radii = radii - np.array([fat, fat, 0.0])
    cavity_radii = muscle_radii - np.array([wall, wall, 0.0])
    outline = Ellipsoid(center, radii, exponent=2.3)
    muscle = Ellipsoid(center, muscle_radii, exponent=2.3)
    cavity = Ellipsoid(center, cavity_radii, exponent=2.3)
    layers = [(outline, v.hu("fat")), (muscle, v.hu("muscle")), (cavity, v.hu("fat") + 10.0)]
    return layers, cavity, body_scale, muscle_radii


def _ribs(v: _Variation, center_y: float, muscle_radii: np.ndarray) -> list[Tube]:
    """Draw four pairs of ribs curving from the spine round the flanks, sloping down anteriorly.

    Args:
        v: the case's random variation.
        center_y: the body's centre in y (mm).
        muscle_radii: the muscle layer's radii (mm).

    Returns:
        the ribs.
    """
    ribs = []
    ring = muscle_radii[:2] - 6.0
    for z0, reach in ((112.0, 80.0), (86.0, 70.0), (60.0, 40.0), (34.0, 10.0)):
        z0 += v.rng.uniform(-5.0, 5.0)
        theta = np.deg2rad(np.linspace(-75.0, reach, 7))
        for side in (1.0, -1.0):
            x = side * ring[0] * np.cos(theta)
            y = center_y + ring[1] * np.sin(theta)
            z = z0 - 55.0 * (theta - theta[0]) / (np.deg2rad(150.0))
            ribs.append(Tube.through(np.stack([x, y, z], axis=1), 5.0))
    return ribs


def generate_abdominal_ct(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic portal-venous abdominal CT and its seven-structure label map.

    Stand-in for the data of Roth et al. (2018), Sec. III.A. Anatomy is defined in mm around the volume's centre,
    so any ``shape``/``spacing`` renders the same case (coarser grids just lose thin vessels).

    Args:
        rng: the random generator; the same generator state gives byte-identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(256, 256, 120)``.
        spacing: voxel size in mm; default ``(1.5, 1.5, 2.0)`` (a 384 x 384 x 240 mm field of view).

    Returns:
        ``image`` int16 ``[X, Y, Z]`` in HU (clipped to [-1024, 3071]) and ``label`` uint8 ``[X, Y, Z]`` with
        values :data:`ABDOMINAL_CT_LABELS`, both with affine ``centered_affine(shape, spacing)`` (RAS+).
    """
    v = _Variation(rng)
    canvas = Canvas(shape, spacing, background=AIR_HU)
    draw = canvas.draw

    # Body wall and the cavity that clips the viscera.
    layers, cavity, body, muscle_radii = _body_layers(v)
    for layer, hu in layers:
        draw(layer, hu, 0)
    center_y = float(layers[0][0].center[1])
    muscle_hu = v.hu("muscle")
    for side in (1.0, -1.0):
        draw(Ellipsoid([side * 38.0, -102.0 * body[1], 0.0], [24.0, 20.0, np.inf], exponent=2.5), muscle_hu, 0)
        psoas = v.vessel(
            [[side * 28.0, -58.0, 40.0], [side * 40.0, -52.0, -40.0], [side * 55.0, -42.0, -125.0]], [7.0, 18.0, 26.0]
        )
        draw(psoas, muscle_hu, 0)
    lung_hu = v.hu("lung")
    for side in (1.0, -1.0):
        lung, _, _ = v.organ([side * 75.0, -30.0, 168.0], [62.0, 65.0, 70.0], body=body)
        draw(Intersection([lung, cavity]), lung_hu, 0)
    rib_hu = v.hu("cortical_bone") - 250.0
    for rib in _ribs(v, center_y, muscle_radii):
        draw(rib, rib_hu, 0)

    # Vertebral column: body with cortical rim, discs, posterior arch, canal.
    spine_shift = v.shift(4.0) * np.array([1.0, 1.0, 0.0])
    spine_rot = random_rotation(rng, 4.0)
    sx, sy = spine_shift[:2]
    bone = rim_profile(v.hu("cancellous_bone"), v.hu("cortical_bone"), thickness=2.5)
    vertebra = Ellipsoid([sx, -60.0 + sy, 0.0], [22.0, 18.0, np.inf], spine_rot)
    draw(vertebra, bone, 0)
    disc_hu, z_disc = v.hu("disc"), rng.uniform(0.0, 32.0)
    for zd in np.arange(-128.0, 128.0, 32.0) + z_disc:
        slab = Intersection([HalfSpace([0, 0, zd + 4.0], [0, 0, 1]), HalfSpace([0, 0, zd - 4.0], [0, 0, -1])])
        draw(Intersection([Ellipsoid([sx, -60.0 + sy, zd], [20.0, 16.0, 30.0], spine_rot), slab]), disc_hu, 0)
    draw(Ellipsoid([sx, -90.0 + sy, 0.0], [17.0, 15.0, np.inf], spine_rot), bone, 0)
    draw(Ellipsoid([sx, -112.0 + sy, 0.0], [5.0, 13.0, np.inf], spine_rot), bone, 0)
    draw(Ellipsoid([sx, -88.0 + sy, 0.0], [9.0, 8.0, np.inf], spine_rot), v.hu("csf"), 0)

    # Kidneys (unlabelled confounders, as bright as the vessels' lower range).
    kidney_hu = rim_profile(v.hu("kidney_medulla"), v.hu("kidney_cortex"), thickness=7.0, width=3.0)
    for c, angles in (([62.0, -58.0, -42.0], (-10.0, 0.0, 20.0)), ([-62.0, -58.0, -25.0], (-10.0, 0.0, -20.0))):
        kidney, _, _ = v.organ(c, [24.0, 22.0, 50.0], angles, body=body)
        draw(Intersection([kidney, cavity]), kidney_hu, 0)

    # Bowel: colon, duodenal C-loop and small-bowel loops (unlabelled), with gas pockets.
    bowel_hu = v.hu("bowel")
    colon, _, _ = v.tube_organ(
        [[72, 15, -125], [75, 15, -45], [62, 42, -22], [0, 62, -32], [-70, 30, 8], [-82, -8, -40], [-80, -5, -125]],
        [22, 22, 20, 19, 20, 18, 18],
        jitter=5.0,
        body=body,
    )
    duodenum = v.vessel([[35, 14, 12], [47, 2, 0], [44, -6, -30], [15, -12, -42], [-18, -6, -36]], [12, 12, 12, 11, 11])
    loops = []
    for _ in range(4):
        start = np.array([rng.uniform(-55, 55), rng.uniform(0, 60), rng.uniform(-110, -50)])
        steps = rng.normal(0.0, 25.0, size=(5, 3))
        pts = np.clip(start + np.cumsum(steps, axis=0), [-70, -10, -120], [70, 75, -30])
        loops.append(Tube.through(pts, rng.uniform(11.0, 15.0)))
    for tube in [colon, duodenum, *loops]:
        draw(Intersection([tube, cavity]), bowel_hu, 0)
    for _ in range(int(rng.integers(2, 6))):
        p = colon.points[int(rng.integers(0, len(colon.points)))]
        draw(Ellipsoid(p + rng.normal(0.0, 4.0, 3), rng.uniform(5.0, 12.0, 3)), AIR_HU, None)

    # Liver: right lobe superellipsoid smoothly joined to the left lobe; hepatic veins kept inside its label.
    right_lobe, liver_shift, _ = v.organ(
        [68.0, -5.0, 48.0], [66.0, 80.0, 64.0], (0.0, 0.0, 10.0), exponent=2.4, body=body
    )
    left_lobe = Ellipsoid(
        [0.0, 35.0, 62.0] + liver_shift,
        np.array([48.0, 32.0, 34.0]) * v.scale(),
        rotation_matrix((0.0, -15.0, 0.0)),
        warp=SmoothWarp(rng, 4.0, 90.0),
    )
    liver = Intersection([Union([right_lobe, left_lobe], smoothness=15.0), cavity])
    draw(liver, v.hu("liver"), 3)
    hilum = np.array([36.0, 4.0, 34.0]) + liver_shift
    ivc_top = np.array([20.0, -30.0, 96.0]) + liver_shift * np.array([0.5, 0.5, 1.0])
    hv_hu = v.hu("hepatic_vein")
    for end in ([85.0, 5.0, 75.0], [35.0, 25.0, 82.0], [0.0, 30.0, 80.0]):
        tip = np.asarray(end) + liver_shift
        draw(v.vessel([ivc_top, (ivc_top + tip) / 2, tip], [5.0, 4.0, 2.5]), hv_hu, None)

    # Stomach: J-shaped tube from the fundus (left, posterior, high) to the pylorus; enhancing wall, air-fluid level.
    stomach_tube, _, _ = v.tube_organ(
        [[-55, -25, 85], [-58, 5, 68], [-45, 30, 40], [-28, 45, 16], [0, 48, 6], [22, 32, 10], [33, 16, 12]],
        [34, 36, 32, 26, 19, 12, 11],
        body=body,
    )
    stomach_hu = rim_profile(v.hu("stomach_contents"), v.hu("stomach_wall"), thickness=3.5)
    draw(Intersection([stomach_tube, cavity]), stomach_hu, 5)
    if rng.uniform() < 0.6:
        top = float(np.max(stomach_tube.points[:, 1] + stomach_tube.radii))
        level = top - rng.uniform(8.0, 22.0)
        lumen = Intersection([Tube(stomach_tube.points, stomach_tube.radii - 3.5), cavity])
        draw(Intersection([lumen, HalfSpace([0.0, level, 0.0], [0.0, -1.0, 0.0])]), AIR_HU, None)

    # Spleen: left posterior, long axis obliquely anterior-medial, concave at the hilum.
    spleen_shape, spleen_shift, _ = v.organ([-92.0, -42.0, 52.0], [22.0, 52.0, 42.0], (0.0, 0.0, -30.0), body=body)
    spleen_hilum = np.array([-70.0 * body[0], -24.0, 46.0]) + spleen_shift
    hilum_notch = Ellipsoid(spleen_hilum + [18.0, 8.0, 0.0], [22.0, 22.0, 30.0])
    spleen = Intersection([Difference(spleen_shape, hilum_notch), cavity])
    draw(spleen, v.hu("spleen"), 4)

    # Pancreas: head in the duodenal C-loop, neck anterior to the portal confluence, tail at the splenic hilum.
    pancreas, pancreas_shift, _ = v.tube_organ(
        [[25, -10, -10], [30, -2, 8], [8, 10, 18], [-25, 5, 26], [-55, -10, 34], [-72, -22, 40]],
        [16, 18, 13, 12, 10, 9],
        jitter=3.0,
    )
    draw(Intersection([pancreas, cavity]), v.hu("pancreas"), 7)

    # Gallbladder: pear-shaped, in the fossa under the liver, long axis tilted up towards the hilum.
    gb_center = np.array([48.0, 42.0, -2.0]) + liver_shift + rng.uniform(-5.0, 5.0, 3)
    gb_radii = np.array([14.0, 14.0, 36.0]) * v.scale()
    gb = Ellipsoid(gb_center, gb_radii, rotation_matrix((35.0, 10.0, 0.0)), warp=SmoothWarp(rng, 2.0, 50.0))
    draw(gb, v.hu("gallbladder"), 6)

    # Inferior vena cava (unlabelled, enhanced like the portal vein).
    ivc_path = [ivc_top, [20.0, -30.0, 40.0], [18.0, -32.0, -40.0], [16.0, -33.0, -125.0]]
    ivc = v.vessel(ivc_path, [11.0, 11.0, 12.0, 12.0])
    draw(ivc, v.hu("ivc"), 0)

    # Portal venous system (label 2).
    pv_hu = v.hu("portal_vein")
    confluence = np.array([8.0, -2.0, 18.0]) + pancreas_shift * 0.7
    tubes = [
        v.vessel([confluence, (confluence + hilum) / 2 + [0.0, -3.0, 0.0], hilum], [7.5, 7.0, 7.0]),
        v.vessel([hilum, hilum + [22.0, -6.0, 8.0], hilum + [52.0, -14.0, 10.0]], [6.0, 4.5, 3.0]),
        v.vessel([hilum, hilum + [-20.0, 16.0, 16.0], hilum + [-40.0, 28.0, 24.0]], [5.0, 3.5, 2.5]),
        v.vessel([confluence, [-25.0, -10.0, 25.0] + pancreas_shift, spleen_hilum], [5.5, 5.0, 4.5]),
        v.vessel([confluence, confluence + [2.0, 8.0, -30.0], confluence + [4.0, 14.0, -90.0]], [6.0, 5.0, 4.0]),
    ]
    for tube in tubes:
        draw(tube, pv_hu, 2)

    # Arteries (label 1): aorta left-anterior of the spine, coeliac trunk with hepatic and splenic arteries, SMA.
    art_hu = v.hu("artery")
    aorta_path = np.array([[-16.0, -28.0, 125.0], [-15.0, -27.0, 40.0], [-14.0, -25.0, -40.0], [-12.0, -22.0, -125.0]])
    aorta = v.vessel(aorta_path + spine_shift, [10.5, 10.5, 10.0, 9.5], jitter=1.5)
    coeliac_origin = np.array([-14.0 + sx, -18.0 + sy, 45.0])
    coeliac_end = coeliac_origin + [2.0, 16.0, 2.0]
    sma_origin = np.array([-14.0 + sx, -17.0 + sy, 30.0])
    arteries = [
        aorta,
        v.vessel([coeliac_origin, coeliac_end], [3.5, 3.5]),
        v.vessel([coeliac_end, coeliac_end + [22.0, 2.0, 1.0], hilum + [-2.0, 6.0, 8.0]], [3.0, 2.8, 2.5]),
        v.vessel([coeliac_end, coeliac_end + [-28.0, -8.0, 3.0], spleen_hilum + [4.0, 2.0, 6.0]], [3.2, 3.0, 3.0]),
        v.vessel(sma_origin + np.array([[0, 0, 0], [2, 17, -10], [4, 27, -50], [2, 32, -110]]), [4.0, 4.0, 3.5, 3.0]),
    ]
    for tube in arteries:
        draw(tube, art_hu, 1)

    # Mild smooth non-uniformity, then white noise of a per-case sigma.
    sigma = float(rng.uniform(*NOISE_SIGMA_RANGE))
    image = canvas.image
    image += smooth_random_field(rng, canvas.shape, canvas.spacing, correlation=60.0, std=float(rng.uniform(1.0, 3.0)))
    image += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(sigma)
    np.clip(image, *HU_CLIP, out=image)
    logger.debug("abdominal CT phantom: shape %s, spacing %s, noise sigma %.1f HU", canvas.shape, tuple(spacing), sigma)
    return np.rint(image).astype(np.int16), canvas.label


#: The task this module declares (found by :data:`common.phantoms.registry.PHANTOM_TASKS`).
PHANTOM_TASK = PhantomTask(
    name="abdominal_ct_multiorgan",
    generator=generate_abdominal_ct,
    labels=ABDOMINAL_CT_LABELS,
    modality={"0": "CT"},
    description=(
        "Synthetic portal-venous abdominal CT phantom (HU) with artery, portal vein, liver, spleen, stomach, "
        "gallbladder and pancreas labels, standing in for the data of Roth et al. 2018, Sec. III.A"
    ),
    dicom_modality="CT",
    defaults={"shape": list(DEFAULT_SHAPE), "spacing": [float(s) for s in DEFAULT_SPACING]},
    version=1,
)
