"""Importing a judge's package lazily, with an error that says how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = 'pip install -e ".[eval]"'


class MissingEvalPackage(ImportError):
    """A judge of `audiolm-pl eval` needs a package of the `eval` extra that is not installed."""


def import_judge_package(module: str, judge: str) -> ModuleType:
    """`importlib.import_module(module)`, or `MissingEvalPackage` naming the judge and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingEvalPackage(
            f"the {judge} judge needs the Python package {module.split('.')[0]!r}, which cannot be imported ({err}); "
            f"install the eval extra: {INSTALL_HINT}"
        ) from None
