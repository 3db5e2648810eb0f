"""Importing this module installs :py:func:`~common.data.excepthook.install_error_hook` (idempotent).

It exists for the bundle configs, whose ``imports`` list ``"$import common.data.show_input_error_last"``: MONAI
evaluates a config's import statements before any other item (``ReferenceResolver`` resolves them first, whichever
id is asked for), so the hook is in place before ``initialize`` checks the model file and before the datalist
preflight reads any header, and an overlay that replaces ``initialize`` (``evaluate.json``,
``multi_gpu_train.json``) keeps it. A function call cannot go in ``imports`` (MONAI evaluates only its import
statements early), hence an import with this one effect; ``import common.data`` itself has none.
"""

from .excepthook import install_error_hook

__all__: list[str] = []

install_error_hook()
