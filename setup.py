"""The optional C accelerator (``taskvisor._cevents``); everything else is in pyproject.toml.

The extension is ``optional``: where it cannot be compiled (no C compiler, no Python headers,
another interpreter than CPython), the install goes on and taskvisor runs its pure-Python
code, which behaves the same. ``TASKVISOR_NO_EXTENSIONS=1`` at install time skips it.
"""

import os
import sys

from setuptools import Extension, setup

_BUILD = sys.implementation.name == "cpython" and not os.environ.get("TASKVISOR_NO_EXTENSIONS")

setup(
    ext_modules=[
        Extension("taskvisor._cevents", ["src/taskvisor/_cevents.c"], optional=True),
    ]
    if _BUILD
    else [],
)
