"""The suite tests behaviour through the public surface (issue 19).

A test function *touches private names* when it — or a helper, class or fixture it names,
defined in its own file or in a ``conftest.py`` — imports from a private ``taskvisor._…``
module or reads an attribute ``_x`` (not a dunder) of anything but ``self``/``cls``. Such tests
freeze the internals; at most ``LIMIT`` of all test functions may do it, and only where no
public behaviour shows the rule.

This file reads attribute names from the syntax tree only, so it never counts itself.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LIMIT = 0.10
"""The largest share of test functions that may touch private names."""

TESTS = Path(__file__).resolve().parent

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _is_private_module(module: str | None, level: int = 0) -> bool:
    if not module:
        return False
    if level > 0:  # a relative import inside the package itself
        return module.startswith("_")
    return module.startswith("taskvisor._")


def _is_private_attribute(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports_private(n: ast.ImportFrom) -> bool:
    """``from taskvisor._x import …``, or ``from taskvisor import _x`` (the module itself)."""
    if _is_private_module(n.module, n.level):
        return True
    public_package = n.level > 0 or (n.module or "").split(".")[0] == "taskvisor"
    return public_package and any(_is_private_attribute(a.name) for a in n.names)


def touches_private(node: ast.AST) -> bool:
    """Whether this subtree imports a private module or reads ``_x`` of another object."""
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom) and _imports_private(n):
            return True
        if isinstance(n, ast.Import) and any(_is_private_module(a.name) for a in n.names):
            return True
        if isinstance(n, ast.Attribute) and _is_private_attribute(n.attr):
            owner = n.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                return True
    return False


def names_used(node: ast.AST) -> set[str]:
    """Every bare name read in this subtree, and every parameter name (pytest fixtures)."""
    names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    for n in ast.walk(node):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
            names |= {a.arg for a in (*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs)}
    return names


def _private_imports(tree: ast.Module) -> set[str]:
    """Names a module binds from private ``taskvisor`` modules."""
    bound: set[str] = set()
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and _is_private_module(n.module, n.level):
            bound |= {a.asname or a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and _imports_private(n):
            bound |= {a.asname or a.name for a in n.names if _is_private_attribute(a.name)}
        elif isinstance(n, ast.Import):
            for a in n.names:
                if _is_private_module(a.name):
                    bound.add((a.asname or a.name).split(".")[0])
    return bound


def _definitions(tree: ast.Module) -> dict[str, Definition]:
    return {
        n.name: n
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def _taint_checker(defs: dict[str, Definition], imported: set[str]) -> Callable[[str], bool]:
    """Whether a module-level definition touches private names, itself or through others."""
    known: dict[str, bool] = {}

    def tainted(name: str, visiting: frozenset[str] = frozenset()) -> bool:
        if name in known:
            return known[name]
        if name in visiting:
            return False
        node = defs[name]
        used = names_used(node)
        hit = touches_private(node) or bool(used & imported)
        if not hit:
            inner = visiting | {name}
            hit = any(u in defs and u != name and tainted(u, inner) for u in used)
        known[name] = hit
        return hit

    return tainted


@dataclass
class Census:
    """Test functions per file, and those touching private names."""

    total: dict[str, int] = field(default_factory=dict)
    private: dict[str, list[str]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.total.values())

    @property
    def offending(self) -> int:
        return sum(len(v) for v in self.private.values())

    def report(self) -> str:
        lines = [f"{self.offending} of {self.count} test functions touch private names:"]
        for name, funcs in sorted(self.private.items(), key=lambda kv: -len(kv[1])):
            if funcs:
                lines.append(f"  {name}: {len(funcs)} / {self.total[name]}")
                lines.extend(f"    {f}" for f in funcs)
        return "\n".join(lines)


def census(root: Path) -> Census:
    """Count, over every ``test_*.py`` under ``root``, the test functions touching privates."""
    shared: dict[str, Definition] = {}
    for conftest in sorted(root.rglob("conftest.py")):
        shared.update(_definitions(ast.parse(conftest.read_text(encoding="utf-8"))))
    result = Census()
    for path in sorted(root.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defs = {**shared, **_definitions(tree)}
        imported = _private_imports(tree)
        tainted = _taint_checker(defs, imported)

        tests = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")
        ]
        rel = str(path.relative_to(root))
        result.total[rel] = len(tests)
        result.private[rel] = []
        for fn in tests:
            used = names_used(fn)
            if (
                touches_private(fn)
                or bool(used & imported)
                or any(u in defs and u != fn.name and tainted(u) for u in used)
            ):
                result.private[rel].append(fn.name)
    return result


def test_the_census_counts_what_the_rule_names(tmp_path: Path) -> None:
    # A private import, a private attribute of another object, a tainted helper, class or
    # fixture (also one from conftest.py) count; ``self._x``, dunders and clean helpers do not.
    (tmp_path / "conftest.py").write_text(
        "import taskvisor\n"
        "def shared_fixture():\n"
        "    return taskvisor.Supervisor()._registry\n"
        "def clean_fixture():\n"
        "    return taskvisor.Supervisor()\n"
    )
    (tmp_path / "test_sample.py").write_text(
        "from taskvisor._events import thing\n"
        "import taskvisor\n"
        "from taskvisor import Event, _testhooks as hooks\n"
        "def helper():\n"
        "    return thing\n"
        "def indirect():\n"
        "    return helper()\n"
        "def clean_helper():\n"
        "    return taskvisor.Event\n"
        "class Mine:\n"
        "    def __init__(self):\n"
        "        self._x = 1\n"
        "    def get(self):\n"
        "        return self._x\n"
        "class Peeking:\n"
        "    def get(self, other):\n"
        "        return other._x\n"
        "def test_import(): thing()\n"
        "def test_attr(): taskvisor.Supervisor()._registry\n"
        "def test_helper(): helper()\n"
        "def test_indirect(): indirect()\n"
        "def test_class(): Peeking()\n"
        "def test_fixture(shared_fixture): pass\n"
        "def test_self(): Mine().get()\n"
        "def test_dunder(): taskvisor.__all__\n"
        "def test_clean(clean_fixture): clean_helper()\n"
        "def test_module(): hooks.zero_backoff\n"
        "def test_public_name(): Event\n"
    )
    found = census(tmp_path)
    assert found.total == {"test_sample.py": 11}
    assert found.private == {
        "test_sample.py": [
            "test_import",
            "test_attr",
            "test_helper",
            "test_indirect",
            "test_class",
            "test_fixture",
            "test_module",
        ]
    }
    assert "test_sample.py: 7 / 11" in found.report()


def test_at_most_a_tenth_of_the_tests_touch_private_names() -> None:
    found = census(TESTS)
    assert found.count > 300, found.total  # it did find the suite
    share = found.offending / found.count
    assert share <= LIMIT, f"{share:.1%} > {LIMIT:.0%}\n{found.report()}"
