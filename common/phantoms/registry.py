"""The phantom task registry: what a generator declares (:class:`PhantomTask`), and how tasks are found.

Every generator module of the ``common.phantoms`` package declares its task at module level::

    PHANTOM_TASK = PhantomTask(name="hand_mri_bone", generator=generate_hand_mri, labels={0: "background", ...},
                               modality={"0": "MRI"}, dicom_modality="MR", description="...",
                               defaults={"shape": [120, 120, 64], "spacing": [2.0, 2.0, 2.0]})

(a tuple of tasks is accepted too). On the first lookup :data:`PHANTOM_TASKS` imports every public module of the
package (:func:`discover_tasks`) and collects those declarations, so a new generator module needs no edit to
shared code. Two modules declaring the same task name is an error.

The generator contract (checked by :meth:`PhantomTask.generate` for every case):
``generator(rng, **kwargs)`` returns a mapping with

- ``"image"``: ``[*spatial]`` for one channel, else ``[*spatial, C]`` (channels last in memory, whatever the
  file layout), where ``spatial`` is ``(X, Y, Z)`` or, for ``spatial_dims=4``, ``(X, Y, Z, T)``. CT images are
  integer HU (written int16); other images float (written float32) or integer (written as returned).
- ``"label"``: integer ``[*spatial]`` with values among ``labels`` (and ``ignore_value``), written uint8.
- one array per key of ``masks`` (values 0/1, ``[*spatial]``), written uint8.
- one JSON value per name of ``fields`` (number, string, bool, or a list of them), copied into the datalist entry.

Nothing else. A plain ``(image, label)`` tuple is accepted as shorthand for ``{"image": image, "label": label}``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import pkgutil
import re
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PhantomTask", "PhantomCase", "TaskRegistry", "PHANTOM_TASKS", "get_task", "discover_tasks"]

logger = logging.getLogger(__name__)

CHANNEL_LAYOUTS = ("last", "files")
DICOM_MODALITIES = ("CT", "MR")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED = ("image", "label")
_INT16 = (-32768, 32767)


@dataclass(frozen=True)
class PhantomCase:
    """One generated case, checked against its task's declaration.

    Attributes:
        image: ``[*spatial]`` (one channel) or ``[*spatial, C]``; int16 for CT.
        label: uint8 ``[*spatial]``.
        masks: mask key -> uint8 ``[*spatial]`` array of 0/1.
        fields: datalist field name -> JSON value.
    """

    image: np.ndarray
    label: np.ndarray
    masks: Mapping[str, np.ndarray] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PhantomTask:
    """A phantom generator and what its data set declares (geometry, channels, labels, file layout).

    The declaration is checked when it is made: a mistake in it raises ``ValueError`` or ``TypeError`` at import
    of the generator module, not halfway through writing a data set.

    Attributes:
        name: the task's name (lower case, digits, ``_``); names files and ``dataset.json``.
        generator: ``generator(rng, **kwargs)`` returning one case (see the module docstring for the contract).
        labels: label value (0-255) -> name, as MSD's ``dataset.json`` ``"labels"``.
        modality: channel index as a string (``"0"``, ``"1"``, ...) -> channel name, as MSD's ``"modality"``;
            one entry per channel.
        description: one line for ``dataset.json``.
        dicom_modality: DICOM Modality (0008,0060) of the images, ``"CT"`` or ``"MR"``: CT images are integer HU
            written as int16 and may be written as DICOM series; MR images cannot.
        defaults: the generator's keyword arguments and their defaults; must hold ``shape`` (``spatial_dims``
            positive integers) and ``spacing`` (``spatial_dims`` positive numbers: mm per voxel, and for
            ``spatial_dims=4`` the frame interval in seconds last).
        version: bumped whenever the generator's output changes, so stale data sets are not reused.
        spatial_dims: 3, or 4 for 3D+time with time as the fourth spatial axis ``(X, Y, Z, T)``.
        n_channels: image channels, e.g. 1 (CT), 19 (perfusion time points), 4 (MRI modalities).
        channel_layout: how a multi-channel image is written: ``"last"``, one file ``[X, Y, Z, C]`` (MSD style,
            ``"tensorImageSize": "4D"``); or ``"files"``, one 3D file per channel, ``<case>_<CCCC>.nii.gz``
            (nnU-Net's channel suffix), listed in channel order as the datalist's ``"image"`` list (the Model Zoo
            BraTS convention; ``LoadImaged`` stacks such a list into channels). ``"last"`` for ``spatial_dims=4``
            would need 5D files and is refused.
        ignore_value: label value meaning "not annotated" (e.g. 255 for unannotated frames, or 0 for sparse
            annotations), or None. It may be a key of ``labels`` (then named there) or not (then it is listed in
            ``dataset.json`` as ``"ignore_value"``).
        masks: extra per-case arrays (mask key -> description), e.g. ``{"mask": "cranial cavity"}``; each is
            written to ``<key>sTr``/``<key>sTs`` and listed under its key in the datalist.
        fields: names of extra per-case datalist values, e.g. ``("ejection_fraction", "labeled_frames")``.
    """

    name: str
    generator: Callable[..., Any]
    labels: Mapping[int, str]
    modality: Mapping[str, str]
    description: str
    dicom_modality: str
    defaults: Mapping[str, Any]
    version: int = 1
    spatial_dims: int = 3
    n_channels: int = 1
    channel_layout: str = "last"
    ignore_value: int | None = None
    masks: Mapping[str, str] = field(default_factory=dict)
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Check the declaration.

        Raises:
            TypeError: the generator is not callable, or an argument has the wrong type.
            ValueError: a value is outside what the data set writer supports.
        """
        where = f"phantom task {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"phantom task name {self.name!r}: expected lower case letters, digits and '_'")
        if not callable(self.generator):
            raise TypeError(f"{where}: generator {self.generator!r} is not callable")
        if self.dicom_modality not in DICOM_MODALITIES:
            raise ValueError(f"{where}: dicom_modality={self.dicom_modality!r}; expected one of {DICOM_MODALITIES}")
        for name, value, allowed in (("spatial_dims", self.spatial_dims, (3, 4)), ("version", self.version, None)):
            if isinstance(value, bool) or not isinstance(value, int) or (allowed and value not in allowed):
                raise ValueError(f"{where}: {name}={value!r}; expected {allowed or 'an integer'}")
        if isinstance(self.n_channels, bool) or not isinstance(self.n_channels, int) or self.n_channels < 1:
            raise ValueError(f"{where}: n_channels={self.n_channels!r}; expected an integer >= 1")
        if self.channel_layout not in CHANNEL_LAYOUTS:
            raise ValueError(f"{where}: channel_layout={self.channel_layout!r}; expected one of {CHANNEL_LAYOUTS}")
        if self.spatial_dims == 4 and self.n_channels > 1 and self.channel_layout == "last":
            raise ValueError(f"{where}: channels last with spatial_dims=4 would need 5D files; use 'files'")
        expected_modality = [str(c) for c in range(self.n_channels)]
        if list(self.modality) != expected_modality:
            raise ValueError(f"{where}: modality keys {list(self.modality)}; expected {expected_modality}")
        if not self.labels or not all(_is_byte(k) for k in self.labels):
            raise ValueError(f"{where}: labels {dict(self.labels)!r}; expected integer keys in [0, 255]")
        if self.ignore_value is not None and not _is_byte(self.ignore_value):
            raise ValueError(f"{where}: ignore_value={self.ignore_value!r}; expected None or an integer in [0, 255]")
        if not isinstance(self.fields, tuple):
            raise TypeError(f"{where}: fields={self.fields!r}; expected a tuple of names")
        keys = [*_RESERVED, *self.masks, *self.fields]
        bad = [k for k in [*self.masks, *self.fields] if not isinstance(k, str) or not _NAME.match(k)]
        if bad or len(set(keys)) != len(keys):
            raise ValueError(
                f"{where}: mask keys {list(self.masks)} and fields {list(self.fields)} must be distinct "
                f"lower-case names other than {list(_RESERVED)}"
            )
        for name in ("shape", "spacing"):
            if name not in self.defaults:
                raise ValueError(f"{where}: defaults {dict(self.defaults)!r} lack {name!r}")
            normalise_sizes(name, self.defaults[name], self.spatial_dims, integer=name == "shape")

    @property
    def supports_dicom(self) -> bool:
        """Whether the test images can also be written as DICOM series: one-channel 3D CT only.

        Returns:
            True for a CT task with one channel and three spatial dimensions.
        """
        return self.dicom_modality == "CT" and self.n_channels == 1 and self.spatial_dims == 3

    @property
    def image_ndim(self) -> int:
        """The number of dimensions of one written image file (``"tensorImageSize"``).

        Returns:
            ``spatial_dims``, plus one for a multi-channel image written channels last.
        """
        return self.spatial_dims + int(self.n_channels > 1 and self.channel_layout == "last")

    def generate(self, rng: np.random.Generator, **kwargs: Any) -> PhantomCase:
        """Run the generator for one case and check its output against this declaration.

        Args:
            rng: the case's random generator.
            kwargs: the generator's keyword arguments (``shape``, ``spacing``, ...).

        Returns:
            the case, with the label and masks as uint8 and a CT image as int16.

        Raises:
            TypeError: the generator returned something other than a mapping or an ``(image, label)`` pair, or a
                field value that is not JSON.
            ValueError: the output's keys, shapes, dtypes or values do not match the declaration.
        """
        out = self.generator(rng, **kwargs)
        where = f"phantom task {self.name!r}: generator output"
        if isinstance(out, tuple) and len(out) == 2:
            out = {"image": out[0], "label": out[1]}
        if not isinstance(out, Mapping):
            raise TypeError(f"{where} is a {type(out).__name__}; expected a mapping with 'image' and 'label'")
        expected = {*_RESERVED, *self.masks, *self.fields}
        if set(out) != expected:
            raise ValueError(f"{where} has keys {sorted(out)}; expected {sorted(expected)}")
        label = _as_array(where, "label", out["label"])
        spatial = tuple(kwargs["shape"]) if "shape" in kwargs else label.shape
        if label.shape != spatial or len(spatial) != self.spatial_dims:
            raise ValueError(f"{where}: label of shape {label.shape}; expected {spatial} ({self.spatial_dims} axes)")
        allowed = set(self.labels) | ({self.ignore_value} if self.ignore_value is not None else set())
        label = _as_uint8(where, "label", label, allowed)
        masks = {}
        for key in self.masks:
            mask = _as_array(where, key, out[key])
            if mask.shape != spatial:
                raise ValueError(f"{where}: {key} of shape {mask.shape}; expected {spatial}")
            masks[key] = _as_uint8(where, key, mask, {0, 1})
        image = self._check_image(where, _as_array(where, "image", out["image"]), spatial)
        fields = {name: _json_value(f"{where}: field {name!r}", out[name]) for name in self.fields}
        return PhantomCase(image=image, label=label, masks=masks, fields=fields)

    def _check_image(self, where: str, image: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
        """Check the image's shape and values and convert its dtype for writing.

        Args:
            where: the start of error messages.
            image: the generator's image.
            spatial: the case's spatial shape.

        Returns:
            the image, int16 for CT, float32 for a floating-point MR image, else unchanged.

        Raises:
            ValueError: wrong shape, non-integer or out-of-range CT, non-finite values or an unsupported dtype.
        """
        shape = spatial if self.n_channels == 1 else (*spatial, self.n_channels)
        if image.shape != shape:
            raise ValueError(f"{where}: image of shape {image.shape}; expected {shape} (channels last)")
        if self.dicom_modality == "CT":
            if not np.issubdtype(image.dtype, np.integer):
                raise ValueError(f"{where}: CT image of dtype {image.dtype}; expected integer HU")
            if image.size and (image.min() < _INT16[0] or image.max() > _INT16[1]):
                raise ValueError(f"{where}: CT values in [{image.min()}, {image.max()}]; expected the int16 range")
            return image.astype(np.int16, copy=False)
        if np.issubdtype(image.dtype, np.floating):
            if not np.isfinite(image).all():
                raise ValueError(f"{where}: image with non-finite values")
            return image.astype(np.float32, copy=False)
        if np.issubdtype(image.dtype, np.integer):
            return image
        raise ValueError(f"{where}: image of dtype {image.dtype}; expected an integer or floating-point dtype")


def _is_byte(value: Any) -> bool:
    """Tell whether ``value`` is an int (not a bool) in [0, 255].

    Args:
        value: the value.

    Returns:
        True for a label value that fits uint8.
    """
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _as_array(where: str, key: str, value: Any) -> np.ndarray:
    """Return ``value`` if it is a numpy array.

    Args:
        where: the start of the error message.
        key: the output key, for the message.
        value: the generator's value.

    Returns:
        the array.

    Raises:
        TypeError: ``value`` is not a numpy array.
    """
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where}: {key} is a {type(value).__name__}; expected a numpy array")
    return value


def _as_uint8(where: str, key: str, array: np.ndarray, allowed: set[int]) -> np.ndarray:
    """Return an integer or boolean array of allowed values as uint8.

    Args:
        where: the start of the error message.
        key: the output key, for the message.
        array: the array to check.
        allowed: the allowed values.

    Returns:
        the array as uint8 (not copied when it is uint8 already).

    Raises:
        ValueError: a non-integer dtype, or values outside ``allowed``.
    """
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{where}: {key} of dtype {array.dtype}; expected integers")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{where}: {key} values in [{array.min()}, {array.max()}]; expected {sorted(allowed)}")
    array = array.astype(np.uint8, copy=False)
    found = set(np.flatnonzero(np.bincount(array.ravel(), minlength=256)).tolist())
    if not found <= allowed:
        raise ValueError(f"{where}: {key} values {sorted(found - allowed)}; expected only {sorted(allowed)}")
    return array


def _json_value(where: str, value: Any) -> Any:
    """Convert a datalist field value to plain JSON (numpy scalars and arrays become numbers and lists).

    Args:
        where: the start of the error message.
        value: the generator's value.

    Returns:
        the value as ``None``, bool, int, finite float, str, or a list of those.

    Raises:
        TypeError: a value of another type.
        ValueError: a non-finite number.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}; expected a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(where, v) for v in value]
    raise TypeError(f"{where} is a {type(value).__name__}; expected a number, string, bool or a list of them")


def normalise_sizes(name: str, value: Any, count: int, integer: bool) -> list:
    """Return ``value`` as a list of ``count`` positive integers (``integer``) or floats.

    Args:
        name: the argument's name, for the message (``"shape"`` or ``"spacing"``).
        value: a sequence, or its JSON text (as the command line passes it).
        count: the number of entries expected (the task's ``spatial_dims``).
        integer: whether the entries must be whole numbers.

    Returns:
        the list of ints or floats.

    Raises:
        ValueError: not a sequence of ``count`` positive finite numbers (whole numbers when ``integer``).
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    example = [96, 96, 48, 10][:count] if integer else [1.5, 1.5, 2.0, 0.1][:count]
    kind = "integers" if integer else "numbers"
    expected = f"expected {name} as {count} positive {kind}, e.g. {example}"
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != count:
        raise ValueError(f"{name}={value!r}; {expected}")
    out = []
    for v in value:
        number = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
        if not number or not math.isfinite(v) or v <= 0 or (integer and float(v) != int(v)):
            raise ValueError(f"{name}={list(value)!r}; {expected}")
        out.append(int(v) if integer else float(v))
    return out


def discover_tasks(package: str = "common.phantoms") -> dict[str, PhantomTask]:
    """Import every public module of ``package`` and collect the tasks they declare as ``PHANTOM_TASK``.

    Modules whose name starts with ``_`` (and ``__main__``) are skipped; a module without ``PHANTOM_TASK``
    declares nothing. Import errors propagate: a broken generator module is not silently left out.

    Args:
        package: the dotted name of the package to search.

    Returns:
        task name -> task, in module order.

    Raises:
        TypeError: a module's ``PHANTOM_TASK`` is not a :class:`PhantomTask` (or a tuple of them).
        ValueError: two declarations share a task name.
    """
    root = importlib.import_module(package)
    found: dict[str, PhantomTask] = {}
    owner: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module_name = f"{package}.{info.name}"
        declared = getattr(importlib.import_module(module_name), "PHANTOM_TASK", None)
        if declared is None:
            continue
        declared = declared if isinstance(declared, tuple) else (declared,)
        for task in declared:
            if not isinstance(task, PhantomTask):
                raise TypeError(f"{module_name}.PHANTOM_TASK holds a {type(task).__name__}; expected PhantomTask")
            if task.name in found:
                raise ValueError(
                    f"phantom task {task.name!r} is declared by both {owner[task.name]} and {module_name}; "
                    "task names must be unique"
                )
            found[task.name], owner[task.name] = task, module_name
    logger.debug("phantom tasks found in %s: %s", package, sorted(found))
    return found


class TaskRegistry(MutableMapping):
    """Task name -> :class:`PhantomTask`, filled from the package's generator modules on first use.

    Setting an entry (e.g. a test's stand-in task) is allowed; its key must be the task's name.

    Args:
        package: the package whose modules declare the tasks.
    """

    def __init__(self, package: str = "common.phantoms") -> None:
        self.package = package
        self._tasks: dict[str, PhantomTask] | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> dict[str, PhantomTask]:
        """Discover the tasks once.

        Returns:
            the registry's dictionary.
        """
        if self._tasks is None:
            with self._lock:
                if self._tasks is None:
                    self._tasks = discover_tasks(self.package)
        return self._tasks

    def refresh(self) -> None:
        """Forget the tasks found so far (and any set by hand); the next lookup discovers them again."""
        self._tasks = None

    def __getitem__(self, name: str) -> PhantomTask:
        return self._loaded()[name]

    def __setitem__(self, name: str, task: PhantomTask) -> None:
        if not isinstance(task, PhantomTask):
            raise TypeError(f"a {type(task).__name__} for phantom task {name!r}; expected PhantomTask")
        if task.name != name:
            raise ValueError(f"phantom task {task.name!r} registered as {name!r}; the key must be the task's name")
        self._loaded()[name] = task

    def __delitem__(self, name: str) -> None:
        del self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        state = sorted(self._tasks) if self._tasks is not None else "not yet discovered"
        return f"TaskRegistry({self.package!r}: {state})"


#: Every phantom task of ``common.phantoms``, discovered from the generator modules on first use.
PHANTOM_TASKS = TaskRegistry("common.phantoms")


def get_task(name: str) -> PhantomTask:
    """Return the registered task called ``name``.

    Args:
        name: the task's name, e.g. ``"abdominal_ct_multiorgan"``.

    Returns:
        the task.

    Raises:
        ValueError: no task has that name (the message lists the known ones).
    """
    if not isinstance(name, str) or name not in PHANTOM_TASKS:
        raise ValueError(f"unknown phantom task {name!r}; expected one of {sorted(PHANTOM_TASKS)}")
    return PHANTOM_TASKS[name]
