"""The ``taskvisor`` command (also ``python -m taskvisor``).

``taskvisor run FILE.toml`` supervises the tasks the file declares until they all finish, a
``[run] stop_after`` delay passes, or SIGINT/SIGTERM arrives (a second one forces); SIGHUP
reloads the file. ``taskvisor check FILE.toml`` only validates the file. ``taskvisor ctl``
talks to a running ``run`` over its control socket. The format is in ``docs/cli.md``.

Exit status: 0 after a clean run; 1 when a task ended ``failed``, ``fatal`` or
``force_aborted`` (or the run could not start, e.g. the status port is taken); 2 for a bad
file or bad usage; 130 when interrupted before supervision began.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._outcome import OutcomeKind
from .._supervisor import Supervisor
from ._control import ControlServer, SocketInUse, client
from ._file import (
    FileErrors,
    Plan,
    SubscriberPlan,
    control_socket,
    import_subscriber,
    load,
    read_toml,
)
from ._limits import Enforcer, detect
from ._narrate import narrator
from ._ready import Readiness
from ._runtime import KEEPER, Runner

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_BAD_OUTCOMES = frozenset({OutcomeKind.FAILED, OutcomeKind.FATAL, OutcomeKind.FORCE_ABORTED})

log = logging.getLogger("taskvisor.cli")


DOCS = "docs/cli.md in the taskvisor sources"


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="taskvisor",
        description="Supervise commands and Python functions declared in a TOML file.",
        epilog=f"The file format, ctl and the exit statuses: {DOCS}.",
    )
    parser.add_argument("--version", action="version", version=f"taskvisor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="supervise the tasks of FILE until they finish or Ctrl+C / SIGTERM",
        description="Supervise the tasks of FILE. Ctrl+C or SIGTERM stops them gracefully "
        "within the grace period; a second one forces. SIGHUP reloads FILE.",
        epilog=f"Reference: {DOCS}.",
    )
    run.add_argument("file", metavar="FILE", help="a taskvisor TOML file")
    run.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="lowest level of the log lines printed to stderr (default: INFO)",
    )
    check = commands.add_parser(
        "check",
        help="validate FILE without running anything",
        description="Validate FILE: syntax, every key and value, that every call target "
        "imports, that programs are on PATH, the after order, and which limits apply. "
        "Runs nothing.",
        epilog=f"Reference: {DOCS}.",
    )
    check.add_argument("file", metavar="FILE", help="a taskvisor TOML file")
    ctl = commands.add_parser(
        "ctl",
        help="control a running `taskvisor run` (status, start, stop, restart, reload, tail)",
        description="Talk to a running `taskvisor run` over its control socket.",
        epilog=f"The socket and its protocol: {DOCS}.",
    )
    where = ctl.add_mutually_exclusive_group(required=True)
    where.add_argument("--file", metavar="FILE", help="the TOML file the run was started with")
    where.add_argument("--socket", metavar="PATH", help="the control socket itself")
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="one line per task (--json: a JSON object)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for action, text in (
        ("start", "start a stopped or finished task"),
        ("stop", "stop a task (it stays stopped until started)"),
        ("restart", "stop a task and start it again"),
    ):
        actions.add_parser(action, help=text).add_argument("name", metavar="NAME")
    actions.add_parser("reload", help="re-read the file; apply only what changed")
    tail = actions.add_parser("tail", help="print a task's last output lines and follow it")
    tail.add_argument("name", metavar="NAME")
    tail.add_argument("-n", "--lines", type=int, default=10, help="lines to show first (10)")
    tail.add_argument("--no-follow", action="store_true", help="print the last lines and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskvisor`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args.file)
        if args.command == "ctl":
            return _ctl(args)
        return _run(args.file, args.log_level)
    except KeyboardInterrupt:
        print("taskvisor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _ctl(args: argparse.Namespace) -> int:
    path = args.socket
    if path is None:
        try:
            data = read_toml(args.file)
        except FileErrors as bad:
            return _report_errors(bad, "taskvisor ctl")
        problems: list[str] = []
        path = control_socket(problems, args.file, Path(args.file).resolve().parent, data)
        if problems:
            return _report_errors(FileErrors(problems), "taskvisor ctl")
    request: dict[str, Any] = {"command": args.action}
    if args.action in ("start", "stop", "restart", "tail"):
        request["name"] = args.name
    if args.action == "tail":
        request["lines"] = args.lines
        request["follow"] = not args.no_follow
    return client(path, request, as_json=bool(getattr(args, "json", False)))


def _report_errors(errors: FileErrors, who: str = "taskvisor") -> int:
    for message in errors.messages:
        print(f"{who}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _check(file: str) -> int:
    try:
        plan = load(file)
    except FileErrors as errors:
        return _report_errors(errors)
    for warning in plan.warnings:
        print(f"taskvisor: warning: {warning}", file=sys.stderr)
    limited = [task for task in plan.tasks if task.limits is not None]
    if limited:
        support = detect()
        print(f"{file}: limits: {support.mechanism()}")
        for task in limited:
            assert task.limits is not None
            print(
                f"{file}: task {task.name!r}: limits: " + "; ".join(support.describe(task.limits))
            )
    names = ", ".join(task.name for task in plan.tasks)
    count = len(plan.tasks)
    parts = [f"{count} task{'s' if count != 1 else ''} ({names})"]
    ordered = [task for task in plan.tasks if task.after]
    if ordered:
        parts.append(f"{len(ordered)} started after others")
    if plan.subscribers:
        kinds = ", ".join(s.type for s in plan.subscribers)
        parts.append(f"subscribers: {kinds}")
    if plan.status is not None:
        host, port = plan.status
        parts.append(f"status page on {_address(host, port)}")
    if plan.stop_after is not None:
        parts.append(f"stops after {plan.stop_after:g}s")
    print(f"{file}: OK: " + "; ".join(parts))
    return EXIT_OK


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _run(file: str, level: str) -> int:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        plan = load(file)
    except FileErrors as errors:
        return _report_errors(errors)
    for warning in plan.warnings:
        log.warning("%s", warning)
    _watch_children_with_pidfds()
    try:
        return asyncio.run(_supervise(plan))
    except FileErrors as errors:
        return _report_errors(errors)


def _watch_children_with_pidfds() -> None:
    """On Python 3.11, learn of programs' exits through pidfds, not a thread per program.

    3.11's default child watcher waits for each child in a thread of its own: 200 programs
    are 200 threads (about 7 MiB) and a thread start per restart. Python 3.12 picks pidfds
    by itself (and deprecates choosing); kernels before 5.3 keep the default.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return
    asyncio.set_child_watcher(asyncio.PidfdChildWatcher())


# ---------------------------------------------------------------------- subscribers


class _Built:
    """The subscribers of a run, and what must happen to them afterwards."""

    def __init__(self) -> None:
        self.subscribers: list[object] = []
        self.closers: list[Callable[[], None]] = []
        self.prometheus: Any = None

    def close(self) -> None:
        for close in self.closers:
            try:
                close()
            except Exception as exc:  # one bad close must not hide the others
                log.warning("closing a subscriber failed: %s: %s", type(exc).__name__, exc)


def _build_subscribers(plan: Plan) -> _Built:
    built = _Built()
    errors: list[str] = []
    for sub in plan.subscribers:
        cls = import_subscriber(sub.type)
        try:
            obj = _make(cls, sub)
        except (OSError, TypeError, ValueError) as exc:
            text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            field = "path" if sub.type == "jsonl" else "type"
            errors.append(f"{plan.path}: {sub.where}: {field}: cannot set it up: {text}")
            continue
        built.subscribers.append(obj)
        if sub.type == "prometheus":
            built.prometheus = obj
        close = getattr(obj, "close", None)
        if callable(close):
            built.closers.append(close)
    if errors:
        built.close()
        raise FileErrors(errors)
    if built.prometheus is None and plan.status is not None:
        try:
            built.prometheus = import_subscriber("prometheus")()
        except ImportError:
            log.info("/metrics is off: install prometheus_client (taskvisor[prometheus])")
        else:
            built.subscribers.append(built.prometheus)
    return built


def _make(cls: type[Any], sub: SubscriberPlan) -> object:
    options = dict(sub.options)
    if sub.type == "jsonl":
        return cls(options.pop("path"))
    if sub.type == "log" and "logger" in options:
        options["logger"] = logging.getLogger(options["logger"])
    return cls(**options)


def _metrics_source(prometheus: Any) -> Callable[[], tuple[bytes, str]] | None:
    if prometheus is None:
        return None
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = prometheus.registry

    def render() -> tuple[bytes, str]:
        return generate_latest(registry), CONTENT_TYPE_LATEST

    return render


# ---------------------------------------------------------------------- the run


async def _supervise(plan: Plan) -> int:
    built = _build_subscribers(plan)
    config = replace(plan.config, handle_signals=True)
    declared_log = any(sub.type == "log" for sub in plan.subscribers)
    say = narrator(config.grace, events=not declared_log, hidden=KEEPER)
    sup = Supervisor(config=config, defaults=plan.defaults, subscribers=[*built.subscribers, say])
    if built.prometheus is not None:
        built.prometheus.bind(sup)
    loop = asyncio.get_running_loop()
    readiness = Readiness()
    support = detect()
    if any(task.limits is not None for task in plan.tasks):
        log.info("limits: %s", support.mechanism())
    runner = Runner(plan, sup, readiness, Enforcer(support))
    status: Any = None
    control: ControlServer | None = None
    stopper: list[asyncio.Task[Any]] = []
    reloads: set[asyncio.Task[None]] = set()
    try:
        await sup.start()
        control = ControlServer(runner, plan.socket)
        try:
            await control.start()
        except SocketInUse as exc:
            log.error("%s", exc)
            control = None
            await sup.shutdown()
            return EXIT_FAILED
        except OSError as exc:
            log.warning(
                "taskvisor ctl is off: cannot listen on %s: %s", plan.socket, exc.strerror or exc
            )
            control = None
        if plan.status is not None:
            from .._status import StatusServer

            host, port = plan.status
            status = StatusServer(
                sup,
                host,
                port,
                metrics=_metrics_source(built.prometheus),
                details=runner.details,
                hidden=(KEEPER,),
            )
            try:
                await status.start()
            except OSError as exc:
                log.error(
                    "cannot serve the status page on %s: %s",
                    _address(host, port),
                    exc.strerror or exc,
                )
                status = None
                await sup.shutdown()
                return EXIT_FAILED
            runner.on_add.append(status.track)
        runner.start_all()

        def reload() -> None:
            async def apply() -> None:
                try:
                    log.info("SIGHUP: %s", await runner.reload())
                except Exception as exc:
                    log.error("SIGHUP: %s", exc)

            task = loop.create_task(apply())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        timer = None
        if plan.stop_after is not None:

            def stop_after() -> None:
                log.info("stop_after (%gs) reached", plan.stop_after)
                stopper.append(loop.create_task(sup.shutdown()))

            timer = loop.call_later(plan.stop_after, stop_after)
        count = len(plan.tasks)
        # start() has installed the signal handlers: scripts may signal from the announcement on.
        loop.call_soon(_announce, sup, plan, count)
        report = await sup.run([])
        if timer is not None:
            timer.cancel()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        for task in reloads:
            task.cancel()
        if control is not None:
            await control.stop()
        if status is not None:
            await status.stop()
        runner.close()
        built.close()
    return _summarise(runner, report.grace_exceeded)


def _announce(sup: Supervisor, plan: Plan, count: int) -> None:
    """Say the run is ready: its signals are handled (scripts wait for this line)."""
    if sup.closed:
        return
    log.info(
        "supervising %d task%s from %s (pid %d); Ctrl+C or SIGTERM stops them",
        count,
        "" if count == 1 else "s",
        plan.path,
        os.getpid(),
    )


def _summarise(runner: Runner, grace_exceeded: bool) -> int:
    bad = grace_exceeded
    for program in runner.programs.values():
        outcome = program.outcome
        if outcome is None:  # cannot happen after shutdown; be honest if it does
            log.warning("task %r: no outcome", program.name)
            bad = True
            continue
        attempts = f"{outcome.attempts} attempt{'' if outcome.attempts == 1 else 's'}"
        failed = outcome.kind in _BAD_OUTCOMES
        reason = f": {outcome.reason}" if outcome.reason and failed else ""
        level = logging.WARNING if failed else logging.INFO
        log.log(level, "task %r %s after %s%s", program.name, outcome.kind.value, attempts, reason)
        if failed:
            bad = True
    return EXIT_FAILED if bad else EXIT_OK
