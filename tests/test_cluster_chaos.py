"""The fault harness, short: ``benchmarks/chaos.py`` for 30 s per backend (``make chaos``
runs it until 10,000 handovers per backend). Its checker must report zeros."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cluster_support import require_services

require_services()

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["postgres", "redis"])
def test_chaos_checker_finds_no_violation(backend: str, tmp_path: Path) -> None:
    if shutil.which("faketime") is None:
        pytest.fail(
            "the chaos test needs faketime for its clock nemesis: apt-get install -y faketime"
        )
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.chaos", "--backend", backend, "--duration", "30",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    assert out.exists(), run.stdout + run.stderr
    (report,) = json.loads(out.read_text())
    summary = run.stdout
    assert report["stale_accepted"] == 0, summary
    assert report["overlaps"] == 0, summary
    assert report["lost_submissions"] == 0, summary
    assert report["handovers"] > 100, summary
    for name in ("kill", "stop", "restart", "partition", "clock"):
        assert report["nemeses"][name]["episodes"] >= 1, (name, summary)
    for row in report["nemeses"].values():
        assert row.get("takeover_max_s", 0.0) <= report["takeover_limit_s"], summary
    assert report["ok"], summary
    assert run.returncode == 0, summary
