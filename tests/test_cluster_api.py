"""The public face of taskvisor.cluster: names, docs, optional imports, errors at open."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

import taskvisor.cluster
from cluster_support import free_port, require_services
from taskvisor.cluster import (
    Holding,
    MemoryCoordinator,
    PostgresCoordinator,
    RedisCoordinator,
)
from taskvisor.cluster._protocol import CoordinatorUnavailable

require_services()

PUBLIC = {"Coordinator", "Holding", "MemoryCoordinator", "PostgresCoordinator", "RedisCoordinator"}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_package_exports_exactly_its_public_names() -> None:
    assert set(taskvisor.cluster.__all__) == PUBLIC
    for name in PUBLIC:
        obj = getattr(taskvisor.cluster, name)
        assert obj.__module__ == "taskvisor.cluster"  # reprs read taskvisor.cluster.X
        assert (obj.__doc__ or "").strip(), name


def test_public_methods_are_documented() -> None:
    for cls in (MemoryCoordinator, PostgresCoordinator, RedisCoordinator):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            if inspect.isfunction(member) or isinstance(member, property):
                doc = member.__doc__ if not isinstance(member, property) else member.fget.__doc__
                assert (doc or "").strip(), f"{cls.__name__}.{name}"
    assert taskvisor.cluster.__doc__
    assert "acquire" in taskvisor.cluster.__doc__


def test_holding_is_a_frozen_value() -> None:
    h = Holding("k", "n", 3, 1.5)
    with pytest.raises(AttributeError):
        h.fence = 4  # type: ignore[misc]
    assert not hasattr(h, "__dict__")


def test_importing_the_package_imports_neither_driver() -> None:
    out = run_python(
        "import sys, taskvisor, taskvisor.cluster\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'redis')))"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_missing_driver_says_which_extra_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("psycopg", "redis"):
                    raise ImportError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Hide())
        from taskvisor.cluster import MemoryCoordinator, PostgresCoordinator, RedisCoordinator
        MemoryCoordinator()
        for make in (lambda: PostgresCoordinator("host=x"), lambda: RedisCoordinator("redis://x")):
            try:
                make()
            except ImportError as exc:
                print(exc)
        """
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "PostgresCoordinator needs the psycopg package (3.1 or later); "
        "install the extra: pip install 'taskvisor[postgres]'",
        "RedisCoordinator needs the redis package (5 or later); "
        "install the extra: pip install 'taskvisor[redis]'",
    ]


async def test_a_closed_postgres_port_names_the_target_not_the_password() -> None:
    port = free_port()
    coord = PostgresCoordinator(
        f"postgresql://postgres:s3cret@127.0.0.1:{port}/test", lease=1.0, prefix="tv_bad"
    )
    with pytest.raises(CoordinatorUnavailable) as info:
        await coord.open()
    message = str(info.value)
    assert f"127.0.0.1:{port}/test" in message
    assert "s3cret" not in message
    assert info.value.target == f"postgresql://127.0.0.1:{port}/test"
    await coord.close()  # idempotent after a failed open


async def test_a_missing_postgres_database_names_it() -> None:
    coord = PostgresCoordinator(
        "host=127.0.0.1 port=5432 user=postgres dbname=no_such_db_tv", lease=1.0
    )
    with pytest.raises(CoordinatorUnavailable, match=r"127\.0\.0\.1:5432/no_such_db_tv"):
        await coord.open()


async def test_a_closed_redis_port_names_the_target_not_the_password() -> None:
    port = free_port()
    coord = RedisCoordinator(f"redis://:s3cret@127.0.0.1:{port}/2", lease=1.0)
    with pytest.raises(CoordinatorUnavailable) as info:
        await coord.open()
    assert f"127.0.0.1:{port}/2" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("make", "exc", "words"),
    [
        (lambda: PostgresCoordinator(b"host=x"), TypeError, "dsn"),  # type: ignore[arg-type]
        (lambda: PostgresCoordinator("host='unterminated"), ValueError, "dsn"),
        (lambda: PostgresCoordinator("host=x", pool_size=0), ValueError, "pool_size"),
        (lambda: PostgresCoordinator("host=x", pool_size=1.0), TypeError, "pool_size"),  # type: ignore[arg-type]
        (lambda: RedisCoordinator(None), TypeError, "url"),  # type: ignore[arg-type]
        (lambda: RedisCoordinator("http://x"), ValueError, "url"),
        (lambda: RedisCoordinator("redis://x:notaport"), ValueError, "port"),
    ],
)
def test_bad_targets_are_refused_at_construction(make: object, exc: type, words: str) -> None:
    with pytest.raises(exc, match=words):
        make()  # type: ignore[operator]
