"""Synthetic phantom data sets: one generator per task, the shared drawing helpers, and the data set writer.

Modules, one concept each:

- ``registry``: :class:`PhantomTask` (what a generator declares) and :data:`PHANTOM_TASKS` (found on first use
  from the ``PHANTOM_TASK`` of every generator module of this package).
- ``dataset``: :func:`make_dataset`, NIfTI writing and the ``dataset.json`` datalist.
- ``dicom``: :func:`write_dicom_series`.
- ``cli``: ``python -m common.phantoms make|tasks``.
- ``drawing``: shapes in millimetres and the canvas the generators paint on.
- one module per generator, e.g. ``abdominal_ct``; imported by the registry when a task is looked up, not here,
  so that a bundle exported for the Model Zoo carries its own generator only.
"""

from common.phantoms.dataset import make_dataset
from common.phantoms.dicom import write_dicom_series
from common.phantoms.registry import PHANTOM_TASKS, PhantomTask, get_task

__all__ = [
    "PHANTOM_TASKS",
    "PhantomTask",
    "get_task",
    "make_dataset",
    "write_dicom_series",
]
