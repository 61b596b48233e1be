"""Integrations are optional extras: the core imports without them, and says what is missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

import taskvisor.contrib
import taskvisor.subscribers
import taskvisor.testing

# Installed first in the child interpreter: importing these libraries fails as if the extras
# were not installed.
BLOCKER = textwrap.dedent(
    """
    import sys

    class HideExtras:
        blocked = ("prometheus_client", "opentelemetry")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, HideExtras())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_core_subscribers_and_testing_work_without_the_extras() -> None:
    code = BLOCKER + textwrap.dedent(
        """
        import asyncio, io
        import taskvisor as tv
        import taskvisor.contrib
        from taskvisor.subscribers import JsonLinesSubscriber, LogSubscriber
        from taskvisor.testing import EventRecorder, no_backoff

        async def work():
            return None

        stream = io.StringIO()
        rec = EventRecorder()
        sup = tv.Supervisor(
            tv.SupervisorConfig(handle_signals=False),
            subscribers=[LogSubscriber(), JsonLinesSubscriber(stream), rec],
        )
        with no_backoff():
            asyncio.run(sup.run([tv.TaskSpec.once("w", work)]))
        assert len(stream.getvalue().splitlines()) == len(rec) == 8
        for extra in ("prometheus", "otel"):
            try:
                __import__(f"taskvisor.contrib.{extra}")
            except ImportError as exc:
                print(f"{extra}: {exc}")
            else:
                raise SystemExit(f"taskvisor.contrib.{extra} imported without its library")
        """
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [
        "prometheus: taskvisor.contrib.prometheus needs the prometheus_client package; "
        "install the extra: pip install 'taskvisor[prometheus]'",
        "otel: taskvisor.contrib.otel needs the opentelemetry-api package (and an SDK to "
        "export); install the extra: pip install 'taskvisor[otel]'",
    ]


def test_importing_taskvisor_never_imports_the_integration_libraries() -> None:
    code = textwrap.dedent(
        """
        import sys
        import taskvisor, taskvisor.subscribers, taskvisor.testing, taskvisor.contrib
        loaded = sorted(
            m for m in sys.modules if m.split(".")[0] in ("prometheus_client", "opentelemetry")
        )
        print(loaded)
        """
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (taskvisor.subscribers, {"JsonLinesSubscriber", "LogSubscriber"}),
        (
            taskvisor.testing,
            {"EventRecorder", "NO_BACKOFF_DEFAULTS", "ZERO_BACKOFF", "no_backoff"},
        ),
        (taskvisor.contrib, set()),
    ],
)
def test_public_modules_export_exactly_their_public_names(
    module: types.ModuleType, expected: set[str]
) -> None:
    assert set(module.__all__) == expected
    for name in expected:
        assert hasattr(module, name), name
    # Classes and functions defined here are either exported or private.
    defined = {
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (isinstance(obj, (type, types.FunctionType)))
        and obj.__module__ == module.__name__
    }
    assert defined <= expected
    for name in expected:
        obj = getattr(module, name)
        if isinstance(obj, type):
            # reprs read taskvisor.subscribers.X, or taskvisor.X for what the package exports
            assert obj.__module__ in {module.__name__, "taskvisor"}


def test_contrib_modules_export_their_subscribers() -> None:
    from taskvisor.contrib import otel, prometheus

    assert set(prometheus.__all__) == {"DEFAULT_BUCKETS", "PrometheusSubscriber"}
    assert set(otel.__all__) == {"OpenTelemetrySubscriber"}
    assert issubclass(prometheus.PrometheusSubscriber, taskvisor.Subscriber)
    assert issubclass(otel.OpenTelemetrySubscriber, taskvisor.Subscriber)
