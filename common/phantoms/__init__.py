"""Synthetic phantom data sets: one generator per task, the shared drawing helpers, and the data set writer."""

from common.phantoms.abdominal_ct import ABDOMINAL_CT_LABELS, generate_abdominal_ct
from common.phantoms.api import PHANTOM_TASKS, PhantomTask, make_dataset, write_dicom_series

__all__ = [
    "ABDOMINAL_CT_LABELS",
    "PHANTOM_TASKS",
    "PhantomTask",
    "generate_abdominal_ct",
    "make_dataset",
    "write_dicom_series",
]
