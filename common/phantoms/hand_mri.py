"""Synthetic T1-weighted-like hand MRI with four labelled bone classes, one random posture per case.

A stand-in for the hand data of Kayalibay et al., "CNN-based segmentation of medical imaging data" (2017),
implementing:

- Section 3.1, Data: "30 MRI volumes of a hand in different postures" (the data of Gustus et al. [12]): every case
  is one hand (the same template anatomy, +-5 % in size) in its own random posture; the ground truth labels
  (1) metacarpal, (2) proximal, (3) middle and (4) distal phalanx (:data:`HAND_MRI_LABELS`), everything else
  (carpal bones, radius, ulna, soft tissue, air) is background. The thumb has a metacarpal, a proximal and a
  distal phalanx and no middle phalanx, so there are five bones of classes 1, 2 and 4 and four of class 3;
- Section 3.1, image size: the original 480 x 480 x 280 volumes were "downsampled to one fourth the size in each
  dimension" and "cropped along the z-Axis so as to discard regions depicting empty space above and below the
  hand, resulting in a size of 120 x 120 x 64": the default grid is 120 x 120 x 64 voxels with the palm roughly in
  the x-y plane and the skeleton centred in z (and in x and y, up to a random shift that keeps it in the field of
  view);
- Section 3.1, Table 1 (the average class frequencies, hand: background 0.99, metacarpal 5.13e-3, proximal
  2.29e-3, middle 6.78e-4, distal 4.32e-4): the bones have typical adult sizes, which on the default grid give
  about 0.993 background, metacarpal 4.1e-3, proximal 1.8e-3, middle 5.8e-4 and distal 3.9e-4 (mean of 40
  cases, 0.8-0.9 times the paper's; checked in the tests); the middle and distal phalanges are several times
  rarer than the other bone classes, as the paper stresses;
- Section 3.2.1: the paper's 20 / 5 / 5 split is ``make_dataset("hand_mri_bone", ..., n_cases=20, n_validation=5,
  n_test=5)``.

Invented (the paper states none of it): the voxel size, the anatomy and every number below. The paper does not
give the original voxel size; 0.5 mm (a 240 x 240 x 140 mm field of view) is assumed, so the default spacing after
the four-fold down-sampling is 2 mm and the default field of view 240 x 240 x 128 mm, which holds an adult hand
(about 19 cm from wrist to fingertip) in any posture drawn here. Fig. 5's gap in one proximal phalanx (a bone
section not visible in one original image) is not modelled.

Anatomy (template mm, a right hand palm down before the case's rotation: fingers along +y, thumb towards -x,
palmar side -z; drawn in this order, later over earlier, with partial volume; a voxel takes the label of the last
structure covering at least half of it): the hand's soft tissue, a smooth union of the palm (round the metacarpals,
thicker on the palmar side), thenar and hypothenar eminences, wrist and forearm (leaving the field of view
proximally) and one tube per finger round its bones, covered by skin over a subcutaneous fat layer, with muscle
deeper in the palm, eminences and forearm and fat in the fingers; the flexor and extensor tendons of each digit;
articular cartilage at every joint; the eight carpal bones and the distal radius and ulna (bone, labelled
background); then the labelled bones: each a tube (a chain of rounded cones) with a wide base, a narrower shaft
and a rounded head, a cortical rim over fatty marrow. Bone sizes (length mm, metacarpals I-V 46/68/65/58/54,
proximal phalanges 32/40/45/42/33, middle 23/28/26/18, distal 24/18/19/19/17) are typical adult values.

Posture (per case): every joint is a rotation about the centre of the proximal bone's head, the next bone
starting a joint gap (1.2-2 mm, articular cartilage) beyond it, so a digit's bones never overlap at any flexion.
Finger flexion: a shared grip (0-0.9) plus per-digit variation sets the MCP (-10 to 70 degrees), PIP (0-100) and
DIP (about two thirds of the PIP, up to 75) flexion of each finger, and the thumb's MCP (0-45) and IP (0-75).
Finger spread: one spread (0-1) abducts the index finger by -3 to 17 degrees towards the thumb and the ring and
little fingers by up to 10 and 22 degrees away from it (plus a few degrees per finger); the thumb has its own
radial (20-50 degrees) and palmar (15-45 degrees) abduction. Whole-hand rotation: up to 25 degrees about the palm
normal and 10 degrees about each in-plane axis. The datalist fields ``mean_flexion_deg`` (mean of the 14 joint
flexions), ``finger_spread_deg`` (the angle between the index and little fingers' proximal phalanges in the palm's
plane) and ``rotation_deg`` (the in-plane rotation) record the posture. The skeleton is centred in the field of
view and shifted at random within the room left (on the default grid every bone stays inside it).

Contrast (T1-weighted-like, arbitrary MR units): the fat signal is drawn per case in 800-1200; relative to it
(:data:`RELATIVE_SIGNAL`, drawn per case) marrow 0.75-0.9, skin 0.45-0.6, cartilage 0.35-0.5, muscle 0.3-0.4,
tendon 0.04-0.1 and cortical bone (a 0.8-1.4 mm rim) 0.02-0.07; air 0. The clean image is multiplied by a smooth
bias field ``exp(b)``, ``b`` a Gaussian random field of 90 mm correlation and standard deviation 0.05-0.15, and
made a magnitude image with Rician noise (Gaussian noise of sigma 1.5-3.5 % of the fat signal on the real and
imaginary channels, so air has a Rayleigh floor of a few % of fat).

Orientation (as every phantom here): arrays ``[X, Y, Z]`` with affine ``diag(spacing)`` centred on world 0
(:func:`~common.phantoms.drawing.centered_affine`). Images float32 (arbitrary units), labels uint8. The anatomy is
defined in mm, so any ``shape`` and ``spacing`` render the same hand (a field of view smaller than the hand crops
it); a coarse grid such as 48 x 48 x 32 voxels of 5 x 5 x 4 mm still holds every bone class.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common.phantoms.drawing import (
    Canvas,
    Ellipsoid,
    Painter,
    Shape,
    Tube,
    Union,
    check_grid,
    rim_profile,
    rotation_matrix,
    smooth_random_field,
)
from common.phantoms.registry import PhantomTask

__all__ = [
    "generate_hand_mri",
    "generate_hand_mri_dense",
    "HAND_MRI_LABELS",
    "TISSUES",
    "RELATIVE_SIGNAL",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_TASK",
]

logger = logging.getLogger(__name__)

#: 120 x 120 x 64 voxels of 2 mm (the paper's down-sampled, z-cropped size): a 240 x 240 x 128 mm field of view.
DEFAULT_SHAPE = (120, 120, 64)
DEFAULT_SPACING = (2.0, 2.0, 2.0)

HAND_MRI_LABELS = {0: "background", 1: "metacarpal", 2: "proximal phalanx", 3: "middle phalanx", 4: "distal phalanx"}
BG, METACARPAL, PROXIMAL, MIDDLE, DISTAL = range(5)

#: The tissue map of :func:`generate_hand_mri_dense` (the tissue covering at least half of each voxel).
TISSUES = {
    0: "air",
    1: "skin",
    2: "fat",
    3: "muscle",
    4: "tendon",
    5: "cartilage",
    6: "cortical bone",
    7: "bone marrow",
}
_AIR, _SKIN, _FAT, _MUSCLE, _TENDON, _CARTILAGE, _CORTEX, _MARROW = range(8)

#: Range of each tissue's signal relative to the case's fat signal, drawn per case (T1-weighted-like).
RELATIVE_SIGNAL = {
    "marrow": (0.75, 0.9),
    "skin": (0.45, 0.6),
    "cartilage": (0.35, 0.5),
    "muscle": (0.3, 0.4),
    "tendon": (0.04, 0.1),
    "cortex": (0.02, 0.07),
}
FAT_SIGNAL_RANGE = (800.0, 1200.0)
NOISE_RANGE = (0.015, 0.035)  # Rician noise sigma, relative to the fat signal
BIAS_STD_RANGE = (0.05, 0.15)  # standard deviation of the log bias field
BIAS_CORRELATION_MM = 90.0
SKIN_MM, FAT_MM, CORTEX_MM, COVER_MM = (1.0, 1.8), (2.0, 4.0), (0.8, 1.4), (3.0, 4.0)
PULP_MM = 1.5  # the finger's soft tissue is this much thicker on the palmar side than dorsally

# Digits I (thumb) to V, template mm (u radial, i.e. towards the thumb; y distal; z dorsal). Metacarpal: base
# surface point, fan angle towards the thumb (degrees; the thumb's direction is drawn per case), length, radii
# (base, shaft, head).
_MC_BASE = np.array(
    [[23.0, -57.0, -6.0], [14.5, -55.0, 0.0], [3.5, -57.0, 0.0], [-7.5, -55.0, -1.0], [-17.5, -52.0, -2.5]]
)
_MC_FAN = (0.0, 7.0, 0.0, -7.0, -14.0)
_MC_LENGTH = (46.0, 68.0, 65.0, 58.0, 54.0)
_MC_RADII = ((7.0, 5.6, 7.0), (6.0, 5.6, 7.8), (6.0, 5.6, 7.8), (5.6, 5.0, 7.2), (5.6, 4.8, 6.8))
# Phalanges per digit, proximal to distal: (label, length, (base, shaft, head or tuft radius)).
_PHALANGES = (
    ((PROXIMAL, 32.0, (6.4, 4.7, 5.4)), (DISTAL, 24.0, (5.0, 3.0, 4.0))),
    ((PROXIMAL, 40.0, (6.2, 4.4, 5.1)), (MIDDLE, 23.0, (5.0, 3.6, 4.2)), (DISTAL, 18.0, (4.0, 2.5, 3.2))),
    ((PROXIMAL, 45.0, (6.4, 4.6, 5.3)), (MIDDLE, 28.0, (5.1, 3.7, 4.3)), (DISTAL, 19.0, (4.1, 2.6, 3.3))),
    ((PROXIMAL, 42.0, (6.0, 4.3, 5.0)), (MIDDLE, 26.0, (4.8, 3.5, 4.1)), (DISTAL, 19.0, (4.0, 2.5, 3.2))),
    ((PROXIMAL, 33.0, (5.3, 3.8, 4.4)), (MIDDLE, 18.0, (4.2, 3.1, 3.5)), (DISTAL, 17.0, (3.5, 2.2, 2.8))),
)
# Carpal bones (centre, radii): trapezium, trapezoid, capitate, hamate; scaphoid, lunate, triquetrum, pisiform.
_CARPALS = (
    ((22.0, -66.0, -7.0), (7.0, 6.0, 6.0)),
    ((13.5, -65.0, -1.0), (5.0, 6.0, 6.0)),
    ((3.5, -68.0, 0.0), (6.5, 9.0, 7.0)),
    ((-10.0, -65.0, -1.0), (7.0, 8.0, 7.0)),
    ((14.0, -83.0, -2.0), (7.0, 8.0, 6.0)),
    ((2.0, -84.0, 0.0), (7.0, 7.0, 6.5)),
    ((-10.0, -81.0, -1.0), (6.0, 6.0, 6.0)),
    ((-12.0, -80.0, -9.0), (4.5, 4.5, 4.5)),
)
# Distal radius and ulna (points, radii), leaving the field of view proximally.
_FOREARM_BONES = (
    (((10.0, -106.0, -1.0), (8.0, -140.0, -1.0), (6.0, -320.0, -1.0)), (12.0, 9.0, 8.0)),
    (((-12.0, -104.0, -1.0), (-11.0, -140.0, -1.0), (-10.0, -320.0, -1.0)), (8.0, 6.5, 6.0)),
)
_RIGHT_HAND = np.diag([-1.0, 1.0, 1.0])  # template u (radial) -> world x: the thumb towards -x
_Z = np.array([0.0, 0.0, 1.0])


def _unit(v: np.ndarray) -> np.ndarray:
    """Return ``v`` scaled to unit length.

    Args:
        v: a non-zero vector.

    Returns:
        the unit vector.
    """
    return v / np.linalg.norm(v)


def _across(d: np.ndarray, toward: np.ndarray) -> np.ndarray:
    """Return the unit vector perpendicular to the unit ``d`` in the plane of ``d`` and ``toward``.

    Args:
        d: a unit direction.
        toward: a direction not parallel to ``d``.

    Returns:
        the part of ``toward`` perpendicular to ``d``, normalised.
    """
    return _unit(toward - (toward @ d) * d)


def _frame(d: np.ndarray) -> np.ndarray:
    """Return a rotation whose second column is ``d`` and whose first column lies in the template's x-y plane.

    Args:
        d: a unit direction (not along z).

    Returns:
        the 3 x 3 rotation (columns: across, along ``d``, their cross product).
    """
    e1 = _unit(np.cross(d, _Z))
    return np.stack([e1, d, np.cross(e1, d)], axis=1)


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Return the polynomial smooth minimum of two signed distances (as :class:`~common.phantoms.drawing.Union`).

    Args:
        a: a signed distance (mm).
        b: another, broadcastable with ``a``.
        k: the blending distance (mm).

    Returns:
        the blended distance, at most ``min(a, b)``.
    """
    h = np.clip(0.5 + 0.5 * (b - a) / np.float32(k), 0.0, 1.0)
    return b * (1 - h) + a * h - np.float32(k) * h * (1 - h)


class _Hand:
    """One case's hand in template mm: the posture, the bones and the soft-tissue outline.

    Args:
        rng: the random generator (a fixed number of draws).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.scale = scale = rng.uniform(0.95, 1.05)
        length_jitter = rng.uniform(0.96, 1.04, size=(5, 4))
        self.gap = rng.uniform(1.2, 2.0)
        self.cover = rng.uniform(*COVER_MM)
        grip = rng.uniform(0.0, 0.9)
        flex = np.clip(grip + rng.normal(0.0, 0.25, size=5), 0.0, 1.0)
        noise = rng.normal(0.0, 6.0, size=(5, 2))
        spread = rng.uniform(0.0, 1.0)
        abduction = np.array([0.0, -3.0 + 20.0 * spread, 0.0, 2.0 - 12.0 * spread, 2.0 - 24.0 * spread])
        abduction += rng.normal(0.0, 2.0, size=5) * [0.0, 1.0, 1.5, 1.0, 1.0]
        thumb_radial, thumb_palmar = rng.uniform(20.0, 50.0), rng.uniform(15.0, 45.0)
        # flexion (degrees) of each digit's joints, proximal to distal: MCP, PIP, DIP (thumb: MCP, IP)
        pip = np.clip(95.0 * flex + noise[:, 0], 0.0, 100.0)
        self.flexion = [np.array([45.0 * flex[0], np.clip(65.0 * flex[0] + noise[0, 1], 0.0, 75.0)])]
        for k in range(1, 5):
            dip = np.clip(0.65 * pip[k] + noise[k, 1], 0.0, 75.0)
            self.flexion.append(np.array([-10.0 + 80.0 * flex[k], pip[k], dip]))

        self.bones: list[tuple[int, np.ndarray, np.ndarray]] = []  # (label, tube points, radii), template mm
        self.joints: list[tuple[np.ndarray, float]] = []  # (centre, radius of the head)
        self.fingers: list[tuple[np.ndarray, np.ndarray]] = []  # soft-tissue tube (points, radii) per digit
        self.palm: list[Shape] = []
        self.tendons: list[Tube] = []
        proximal_dirs = []
        for digit in range(5):
            base = _MC_BASE[digit] * scale
            if digit == 0:  # the thumb's metacarpal: radial and palmar abduction
                a, b = np.deg2rad(thumb_radial), np.deg2rad(thumb_palmar)
                d_mc = np.array([np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), -np.sin(b)])
                palmar = _across(d_mc, np.array([-1.0, 0.0, -0.8]))  # the thumb flexes across the palm
                d_prox = d_mc
            else:
                fan = np.deg2rad(_MC_FAN[digit])
                d_mc = _unit(np.array([np.sin(fan), np.cos(fan), -0.04 * digit]))
                palmar = _across(d_mc, -_Z)
                ab = np.deg2rad(abduction[digit])
                d_prox = _unit(np.cos(ab) * d_mc + np.sin(ab) * _unit(np.cross(palmar, d_mc)))  # towards the thumb
                palmar = _across(d_prox, -_Z)
            proximal_dirs.append(d_prox)
            self._digit(digit, base, d_mc, d_prox, palmar, scale, length_jitter[digit])
        self.spread = float(np.degrees(np.arccos(np.clip(proximal_dirs[1] @ proximal_dirs[4], -1.0, 1.0))))
        self.mean_flexion = float(np.mean(np.concatenate(self.flexion)))

    def _digit(
        self,
        digit: int,
        base: np.ndarray,
        d_mc: np.ndarray,
        d_prox: np.ndarray,
        palmar: np.ndarray,
        scale: float,
        jitter: np.ndarray,
    ) -> None:
        """Build one digit's bones, joints, tendons and soft tissue.

        Args:
            digit: 0 (thumb) to 4 (little finger).
            base: the metacarpal's base surface point.
            d_mc: the metacarpal's direction.
            d_prox: the proximal phalanx's direction at zero flexion.
            palmar: the flexion direction (perpendicular to ``d_prox``).
            scale: the case's size factor.
            jitter: the bones' length factors (metacarpal first).
        """
        gap, cover = self.gap, self.cover
        mc_r = np.asarray(_MC_RADII[digit]) * scale
        mc_len = _MC_LENGTH[digit] * scale * jitter[0]
        mc_palmar = palmar if digit == 0 else _across(d_mc, -_Z)
        head = base + (mc_len - mc_r[2]) * d_mc
        self._bone(METACARPAL, base + mc_r[0] * d_mc, head, mc_r)
        self.joints.append((head, mc_r[2]))
        # the palm round the metacarpal, thicker on the palmar side
        offset = 4.0 if digit else 3.0
        self.palm.append(
            Tube(np.array([base - offset * _Z, head + offset * mc_palmar]), mc_r[[0, 2]] + cover + offset + [3.0, 0.0])
        )
        points, head_r, theta = [head], mc_r[2], 0.0
        finger_pts = [head + PULP_MM * mc_palmar]
        finger_r = [mc_r[2] + cover + PULP_MM]
        flexor = [base + 0.5 * mc_len * d_mc + (mc_r[1] + 2.5) * mc_palmar]
        extensor = [base + 0.5 * mc_len * d_mc - (mc_r[1] + 1.5) * mc_palmar]
        normal_prev = mc_palmar
        for k, (label, length, radii) in enumerate(_PHALANGES[digit]):
            theta += np.deg2rad(self.flexion[digit][k])
            d = np.cos(theta) * d_prox + np.sin(theta) * palmar
            normal = -np.sin(theta) * d_prox + np.cos(theta) * palmar
            r = np.asarray(radii) * scale
            joint = points[-1]
            bisector = _unit(normal_prev + normal)
            flexor.append(joint + (head_r + 2.0) * bisector)
            extensor.append(joint - (head_r + 1.2) * bisector)
            start = joint + (head_r + gap + r[0]) * d
            end = joint + (head_r + gap + length * scale * jitter[k + 1] - r[2]) * d
            self._bone(label, start, end, r)
            points.append(end)
            finger_pts.append(end + PULP_MM * normal)
            finger_r.append(r[2] + cover + PULP_MM)
            if label != DISTAL:
                self.joints.append((end, r[2]))
            head_r, normal_prev = r[2], normal
        tip = points[-1] + 2.5 * d
        finger_pts.append(tip + PULP_MM * normal)
        finger_r.append(head_r + cover + PULP_MM)
        flexor.append(points[-1] - 0.5 * (points[-1] - points[-2]) + (head_r + 1.5) * normal)
        extensor.append(points[-1] - 0.7 * (points[-1] - points[-2]) - (head_r + 1.0) * normal)
        self.fingers.append((np.array(finger_pts), np.array(finger_r)))
        self.tendons += [Tube(np.array(flexor), 2.0 * scale), Tube(np.array(extensor), 1.2 * scale)]
        if digit == 0:  # thenar eminence, along the thumb's metacarpal, towards the palm and palmar
            center = base + 0.45 * mc_len * d_mc + np.array([-6.0, 0.0, -7.0])
            self.palm.append(Ellipsoid(center, np.array([13.0, 24.0, 11.0]) * scale, _frame(d_mc)))
        if digit == 4:  # hypothenar eminence, along the little finger's metacarpal
            center = base + 0.45 * mc_len * d_mc + np.array([-3.0, 0.0, -7.0])
            self.palm.append(Ellipsoid(center, np.array([10.0, 26.0, 11.0]) * scale, _frame(d_mc)))

    def _bone(self, label: int, start: np.ndarray, end: np.ndarray, radii: np.ndarray) -> None:
        """Add a labelled bone: a tube from its base cap's centre to its head's centre.

        Args:
            label: the bone's class.
            start: the centre of the base's rounded end.
            end: the centre of the head (the joint's centre of rotation).
            radii: base, shaft and head radius.
        """
        axis = end - start
        points = np.array([start, start + 0.3 * axis, start + 0.7 * axis, end])
        self.bones.append((label, points, np.array([radii[0], radii[1], radii[1], radii[2]])))


def _layers(
    outer: float, inner: float, thickness: float, outer_code: int, inner_code: int
) -> tuple[Callable, Callable]:
    """Return value and tissue functions of the depth: ``outer`` within ``thickness`` of the surface, else ``inner``.

    Args:
        outer: the signal near the surface (skin, cortex).
        inner: the signal deeper (fat, marrow).
        thickness: the outer layer's thickness (mm).
        outer_code: the outer layer's tissue code.
        inner_code: the inner tissue's code.

    Returns:
        ``(value, tissue)`` functions of the depth below the surface (mm).
    """
    value = rim_profile(inner, outer, thickness, min(1.0, thickness))

    def tissue(depth: np.ndarray) -> np.ndarray:
        return np.where(depth < np.float32(thickness), np.uint8(outer_code), np.uint8(inner_code))

    return value, tissue


def generate_hand_mri_dense(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> dict[str, Any]:
    """Generate one hand MRI case with its ground truth: the tissue map, the clean image and the drawn values.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(120, 120, 64)``.
        spacing: voxel size in mm; default ``(2.0, 2.0, 2.0)``.

    Returns:
        what :func:`generate_hand_mri` returns, plus ``tissue`` (uint8 ``[X, Y, Z]``, :data:`TISSUES`), ``clean``
        (the image before bias field and noise), ``bias`` (the multiplicative field), ``signal`` (tissue name ->
        signal), ``noise_sigma``, ``flexion`` (degrees per joint, one array per digit from the thumb) and
        ``rotation`` (the 3 x 3 whole-hand rotation, template to world).

    Raises:
        ValueError: a bad ``shape`` or ``spacing``.
    """  # noqa: DOC502 (raised by the argument check)
    shape, spacing = check_grid(shape, spacing)
    hand = _Hand(rng)
    rotation_deg = rng.uniform(-25.0, 25.0)
    tilt = rng.uniform(-10.0, 10.0, size=2)
    shift = rng.uniform(-1.0, 1.0, size=3)
    fat = rng.uniform(*FAT_SIGNAL_RANGE)
    signal = {name: fat * rng.uniform(*RELATIVE_SIGNAL[name]) for name in RELATIVE_SIGNAL}
    signal["fat"] = fat
    skin_mm, fat_mm, cortex_mm = rng.uniform(*SKIN_MM), rng.uniform(*FAT_MM), rng.uniform(*CORTEX_MM)

    # Template -> world: mirror to a right hand, rotate, then centre the labelled skeleton in the field of view
    # (shifted at random within the room left, if any).
    rot = rotation_matrix([tilt[0], tilt[1], rotation_deg]) @ _RIGHT_HAND
    lo = np.min([(pts @ rot.T - r[:, None]).min(axis=0) for _, pts, r in hand.bones], axis=0)
    hi = np.max([(pts @ rot.T + r[:, None]).max(axis=0) for _, pts, r in hand.bones], axis=0)
    half_fov = (np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    room = np.maximum(half_fov - (hi - lo) / 2.0 - 6.0, 0.0)
    offset = -(lo + hi) / 2.0 + 0.5 * shift * room

    def world(points: np.ndarray | Sequence) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ rot.T + offset

    canvas = Canvas(shape, spacing, background=0.0)
    paint = Painter(canvas)

    # Soft tissue: skin over fat everywhere, muscle deep in the palm, eminences, wrist and forearm.
    palm_parts: list[Shape] = [
        Tube(world(t.points), t.radii) if isinstance(t, Tube) else Ellipsoid(world(t.center), t.radii, rot @ t.rotation)
        for t in hand.palm
    ]
    size = hand.scale
    wrist = Ellipsoid(world(np.array([2.0, -76.0, -2.0]) * size), np.array([32.0, 26.0, 18.0]) * size, rot)
    palm_parts.append(wrist)  # round the carpus
    for u in (14.0, -10.0):  # forearm: two side-by-side tubes, about 60 x 36 mm
        palm_parts.append(Tube(world(np.array([[u, -80.0, -2.0], [u, -330.0, -2.0]]) * size), 18.0 * size))
    palm = Union(palm_parts, smoothness=6.0)
    fingers = [Tube(world(points), radii) for points, radii in hand.fingers]
    lo_all, hi_all = Union([palm, *fingers]).bounds()
    found = canvas.region(lo_all - 2 * canvas.edge, hi_all + 2 * canvas.edge)
    if found is not None:
        sl, axes = found
        crop = tuple(s.stop - s.start for s in sl)
        d_palm = np.broadcast_to(palm.sdf(*axes), crop)
        d_fingers = np.broadcast_to(Union(fingers).sdf(*axes), crop)
        d_hand = _smooth_min(d_palm, d_fingers, 4.0)
        value, tissue = _layers(signal["skin"], signal["fat"], skin_mm, _SKIN, _FAT)
        paint.sdf(d_hand, value, BG, tissue, sl)
        paint.sdf(d_palm + np.float32(skin_mm + fat_mm), signal["muscle"], BG, _MUSCLE, sl)

    # Tendons, articular cartilage, then the unlabelled bones (carpus, radius, ulna) and the labelled bones.
    for tendon in hand.tendons:
        paint.shape(Tube(world(tendon.points), tendon.radii), signal["tendon"], BG, _TENDON)
    for center, radius in hand.joints:
        paint.shape(Ellipsoid(world(center), [radius + 0.8 * hand.gap] * 3), signal["cartilage"], BG, _CARTILAGE)
    value, tissue = _layers(signal["cortex"], signal["marrow"], cortex_mm, _CORTEX, _MARROW)
    for center, radii in _CARPALS:
        paint.shape(Ellipsoid(world(np.array(center) * size), np.array(radii) * size, rot), value, BG, tissue)
    for points, radii in _FOREARM_BONES:
        paint.shape(Tube(world(np.array(points) * size), np.array(radii) * size), value, BG, tissue)
    for label, points, radii in hand.bones:
        paint.shape(Tube(world(points), radii), value, label, tissue)

    # A smooth multiplicative bias field, then a magnitude image with Rician noise.
    clean = canvas.image
    bias_std = rng.uniform(*BIAS_STD_RANGE)
    bias = np.exp(smooth_random_field(rng, shape, spacing, BIAS_CORRELATION_MM, bias_std))
    noise_sigma = float(fat * rng.uniform(*NOISE_RANGE))
    real = clean * bias + rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sigma)
    imaginary = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise_sigma)
    image = np.sqrt(real * real + imaginary * imaginary)
    logger.debug("hand MRI phantom: shape %s, mean flexion %.0f deg", shape, hand.mean_flexion)
    return {
        "image": image,
        "label": canvas.label,
        "mean_flexion_deg": round(hand.mean_flexion, 1),
        "finger_spread_deg": round(hand.spread, 1),
        "rotation_deg": round(float(rotation_deg), 1),
        "tissue": paint.tissue,
        "clean": clean,
        "bias": bias,
        "signal": signal,
        "noise_sigma": noise_sigma,
        "flexion": hand.flexion,
        "rotation": rot,
    }


def generate_hand_mri(
    rng: np.random.Generator,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> dict[str, Any]:
    """Generate one synthetic hand MRI case (a random posture) with four bone labels.

    Stand-in for the hand data of Kayalibay et al. 2017 (see the module docstring); the phantom generator of the
    task ``hand_mri_bone``. :func:`generate_hand_mri_dense` gives the same case with its ground truth.

    Args:
        rng: the random generator; the same state gives identical arrays.
        shape: array shape ``(X, Y, Z)``; default ``(120, 120, 64)`` (the paper's down-sampled size).
        spacing: voxel size in mm; default ``(2.0, 2.0, 2.0)`` (a 240 x 240 x 128 mm field of view).

    Returns:
        ``image`` float32 ``[X, Y, Z]`` (arbitrary MR units, magnitude, >= 0), ``label`` uint8 ``[X, Y, Z]`` with
        values :data:`HAND_MRI_LABELS`, both with affine ``centered_affine(shape, spacing)``, and the datalist fields
        ``mean_flexion_deg``, ``finger_spread_deg`` and ``rotation_deg`` (the posture, degrees).

    Raises:
        ValueError: a bad ``shape`` or ``spacing``.
    """  # noqa: DOC502 (raised by the argument check)
    case = generate_hand_mri_dense(rng, shape, spacing)
    return {key: case[key] for key in ("image", "label", "mean_flexion_deg", "finger_spread_deg", "rotation_deg")}


#: The task this module declares (found by :data:`common.phantoms.registry.PHANTOM_TASKS`).
PHANTOM_TASK = PhantomTask(
    name="hand_mri_bone",
    generator=generate_hand_mri,
    labels=HAND_MRI_LABELS,
    modality={"0": "MRI"},
    description=(
        "Synthetic T1-weighted-like hand MRI phantom (arbitrary units) in random postures (finger flexion and "
        "spread, whole-hand rotation) with four bone labels (metacarpal, proximal, middle and distal phalanx) at "
        "the paper's class imbalance, standing in for the hand data of Kayalibay et al. 2017, Section 3.1"
    ),
    dicom_modality="MR",
    defaults={"shape": list(DEFAULT_SHAPE), "spacing": [float(s) for s in DEFAULT_SPACING]},
    version=1,
    fields=("mean_flexion_deg", "finger_spread_deg", "rotation_deg"),
)
