"""The random state of a training run, as plain tensors and numbers that ``torch.load(weights_only=True)`` reads.

A run draws from Python's ``random``, NumPy's global generator, PyTorch's CPU (and CUDA) generators, and from the
generators of its data pipeline: each MONAI random transform owns a ``numpy.random.RandomState`` (``Randomizable.R``,
seeded by MONAI's ``DataLoader`` through ``monai.data.utils.set_rnd``), nested ones too (``RandAffined`` holds a
``RandAffineGrid`` with its own), and a ``DataLoader`` or its sampler may own a ``torch.Generator``. The shuffling of a
``DataLoader`` without its own generator, and the seeds of its worker processes, come from PyTorch's CPU generator.
:func:`capture_random_state` records all of them, :func:`restore_random_state` puts them back.
"""

from __future__ import annotations

import random
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

__all__ = ["capture_random_state", "find_random_generators", "restore_random_state"]

# values whose attributes are not walked: plain data, arrays, networks, code
_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.Tensor, np.ndarray, np.generic, torch.nn.Module)
_CODE = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)

Generator = np.random.RandomState | torch.Generator


def _children(obj: Any) -> list[tuple[str, Any]]:
    """The named values an object holds: items of a mapping or sequence, else its attributes.

    Returns:
        ``(name, value)`` pairs in the object's own order; a ``Randomizable`` lists its ``R`` even when it is the
        class-level default generator MONAI gives every transform before it is seeded.
    """
    if isinstance(obj, Mapping):
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    attributes = getattr(obj, "__dict__", None)
    if not isinstance(attributes, dict):
        return []
    children = [(k, v) for k, v in attributes.items() if not k.startswith("__")]
    if isinstance(obj, Randomizable) and "R" not in attributes:
        children.append(("R", obj.R))
    return children


def find_random_generators(root: Any, max_depth: int = 16) -> dict[str, Generator]:
    """Every NumPy ``RandomState`` and ``torch.Generator`` reachable from ``root``, named by its attribute path.

    Walks attributes, sequence items and mapping values depth first, in their order, as MONAI's ``set_rnd`` walks a
    data set to seed its transforms, but it goes on into the random transforms, so nested generators are found too.
    A generator reached twice is listed once, under its first path; PyTorch's global CPU generator is left out (see
    :func:`capture_random_state`). For a ``DataLoader`` the paths read e.g. ``dataset.transform.transforms.10.R``.

    Args:
        root: where to start, e.g. a ``DataLoader``, a data set or a ``Compose``.
        max_depth: how many attribute levels to follow.

    Returns:
        path -> generator, in the order found.
    """
    found: dict[str, Generator] = {}
    seen_generators: set[int] = {id(torch.default_generator)}
    visited: set[int] = set()

    def walk(obj: Any, path: str, depth: int) -> None:
        if isinstance(obj, (np.random.RandomState, torch.Generator)):
            if id(obj) not in seen_generators:
                seen_generators.add(id(obj))
                found[path] = obj
            return
        if depth > max_depth or id(obj) in visited or isinstance(obj, (*_LEAVES, *_CODE)):
            return
        visited.add(id(obj))
        for name, value in _children(obj):
            walk(value, f"{path}.{name}" if path else name, depth + 1)

    walk(root, "", 0)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    """A ``RandomState.get_state()`` tuple as tensors and numbers.

    Returns:
        ``{"keys": int64 tensor of 624, "pos": int, "has_gauss": int, "cached_gaussian": float}``.
    """
    _, keys, pos, has_gauss, cached_gaussian = state
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    """The inverse of :func:`_numpy_state`.

    Returns:
        the tuple ``RandomState.set_state`` takes.
    """
    keys = np.asarray(state["keys"].cpu().numpy(), dtype=np.uint32)
    return ("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))


def capture_random_state(root: Any = None) -> dict[str, Any]:
    """The state of the global generators and of every generator reachable from ``root``.

    Args:
        root: the data pipeline, e.g. the training ``DataLoader`` (its sampler's generator, the ``R`` of each random
            transform of its data set), or ``None`` for the global generators only.

    Returns:
        ``{"python": ..., "numpy": ..., "torch": ByteTensor, "cuda": [ByteTensor per device] (empty unless CUDA was
        initialised), "generators": {path: {"numpy": ...} or {"torch": ByteTensor}}}``: tensors, numbers, strings,
        lists and dicts only, so that ``torch.load(..., weights_only=True)`` reads it back.
    """
    version, internal, gauss = random.getstate()
    generators: dict[str, dict[str, Any]] = {}
    for path, generator in (find_random_generators(root) if root is not None else {}).items():
        if isinstance(generator, torch.Generator):
            generators[path] = {"torch": generator.get_state()}
        else:
            generators[path] = {"numpy": _numpy_state(generator.get_state(legacy=True))}
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": _numpy_state(np.random.get_state(legacy=True)),  # noqa: NPY002 (the global one set_determinism seeds)
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "generators": generators,
    }


def restore_random_state(state: Mapping[str, Any], root: Any = None) -> list[str]:
    """Put back a state from :func:`capture_random_state`.

    The global generators are restored, then each generator of ``root`` whose path is in ``state`` (the same config
    builds the same pipeline, so the paths match). CUDA states are restored when as many devices are visible.

    Args:
        state: what :func:`capture_random_state` returned (possibly saved and loaded, on any ``map_location``).
        root: the same kind of object that was captured, e.g. the training ``DataLoader``.

    Returns:
        the paths that could not be restored: in ``state`` but not reachable from ``root``, or the reverse, and
        ``"cuda"`` when the device count differs. Empty when everything was restored.
    """
    python = state["python"]
    random.setstate((int(python["version"]), tuple(int(v) for v in python["state"].tolist()), python["gauss"]))
    np.random.set_state(_numpy_tuple(state["numpy"]))  # noqa: NPY002 (the global generator)
    torch.set_rng_state(state["torch"].cpu())
    missed = []
    cuda = list(state.get("cuda", []))
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            missed.append("cuda")
    current = find_random_generators(root) if root is not None else {}
    saved = dict(state.get("generators", {}))
    for path, generator in current.items():
        entry = saved.pop(path, None)
        if entry is None:
            missed.append(path)
        elif isinstance(generator, torch.Generator) and "torch" in entry:
            generator.set_state(entry["torch"].cpu())
        elif isinstance(generator, np.random.RandomState) and "numpy" in entry:
            generator.set_state(_numpy_tuple(entry["numpy"]))
        else:
            missed.append(path)
    return missed + sorted(saved)
