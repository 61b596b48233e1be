"""The README's Python code runs as written; the docs' Python code at least parses.

Every ```` ```python ```` block of README.md is a complete program, run in a subprocess of
its own (so its ``asyncio.run``, signal handlers and global registries stay isolated).
A block preceded by ``<!-- not-run -->`` is a fragment and is skipped; there must be few.
The pages under docs/ show fragments (``...`` for what is left out): they are compiled,
which catches a typo or a stale syntax, not run.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

BLOCK = re.compile(r"(?P<marker><!-- not-run -->\s*\n)?```python\n(?P<code>.*?)^```", re.S | re.M)


def blocks(path: Path = README) -> list[tuple[int, str, bool]]:
    """(line number, code, runnable) for each python block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        found.append((line, m.group("code"), m.group("marker") is None))
    return found


RUNNABLE = [(line, code) for line, code, runnable in blocks() if runnable]


def test_the_readme_has_code_and_few_fragments() -> None:
    all_blocks = blocks()
    fragments = [line for line, _, runnable in all_blocks if not runnable]
    assert len(RUNNABLE) >= 8
    assert len(fragments) <= 3, f"too many <!-- not-run --> blocks, at lines {fragments}"


@pytest.mark.parametrize(("line", "code"), RUNNABLE, ids=[f"line{line}" for line, _ in RUNNABLE])
def test_readme_block_runs(line: int, code: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, (
        f"README.md block at line {line} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )


DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", DOC_PAGES, ids=[p.name for p in DOC_PAGES])
def test_docs_python_blocks_compile(page: Path) -> None:
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for line, code, _ in blocks(page):
        try:
            compile(code, f"{page.name}:{line}", "exec", flags=flags)
        except SyntaxError as exc:
            pytest.fail(f"{page.name}, block at line {line}: {exc}")


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [README, ROOT / "CHANGELOG.md", *DOC_PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for m in LINK.finditer(page.read_text(encoding="utf-8")):
        target = m.group("target")
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    assert broken == []
