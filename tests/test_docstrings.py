"""Every public name is documented.

ruff's pydocstyle rules ("D", see pyproject.toml) check the form of every docstring in
``src/taskvisor`` but skip the *presence* check for names defined in private modules
(``_supervisor.py`` …), which is where the public classes live. This test closes that gap:
it walks the ``__all__`` of every public module and requires a docstring of its own on each
exported class and function, and on each public method and property those classes define.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

PUBLIC_MODULES = (
    "taskvisor",
    "taskvisor.testing",
    "taskvisor.process",
    "taskvisor.status",
    "taskvisor.subscribers",
    "taskvisor.contrib",
    "taskvisor.contrib.prometheus",
    "taskvisor.contrib.otel",
)

GENERIC_DOCS = {"An enumeration.", None, ""}


def _module(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def _own_doc(obj: object) -> str:
    # A class's own docstring only: ``__doc__`` would otherwise be inherited.
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if doc in GENERIC_DOCS or not isinstance(doc, str):
        return ""
    if isinstance(obj, type) and doc.startswith(f"{obj.__name__}("):
        return ""  # the signature a dataclass writes when the class has no docstring
    return doc.strip()


def _public_members(cls: type) -> list[tuple[str, object]]:
    """Methods, class/static methods and properties the class itself defines."""
    found: list[tuple[str, object]] = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, staticmethod | classmethod):
            found.append((attr, value.__func__))
        elif isinstance(value, property):
            found.append((attr, value.fget))
        elif inspect.isfunction(value):
            found.append((attr, value))
    return found


def _exported() -> list[tuple[str, object]]:
    items: list[tuple[str, object]] = []
    for modname in PUBLIC_MODULES:
        module = _module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) or inspect.isfunction(obj):
                items.append((f"{modname}.{name}", obj))
    return items


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_public_modules_have_docstrings(modname: str) -> None:
    assert _own_doc(_module(modname)), f"{modname} has no module docstring"


def test_every_exported_class_and_function_is_documented() -> None:
    exported = _exported()
    assert len(exported) > 35  # the walk found the public surface
    missing = [name for name, obj in exported if not _own_doc(obj)]
    assert missing == []


def test_every_public_method_and_property_is_documented() -> None:
    missing: list[str] = []
    checked = 0
    for qualname, obj in _exported():
        if not isinstance(obj, type):
            continue
        for attr, member in _public_members(obj):
            checked += 1
            if not _own_doc(member):
                missing.append(f"{qualname}.{attr}")
    assert checked > 40  # methods were found, not silently skipped
    assert missing == []
