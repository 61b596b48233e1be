"""The ``taskvisor`` command (also ``python -m taskvisor``).

``taskvisor run FILE.toml`` supervises the tasks the file declares until they all finish, a
``[run] stop_after`` delay passes, or SIGINT/SIGTERM arrives (a second one forces).
``taskvisor check FILE.toml`` only validates the file. The format is in ``docs/cli.md``.

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
from typing import Any

from .._events import Event, EventKind
from .._outcome import OutcomeKind, TaskHandle
from .._supervisor import Supervisor
from ._file import FileErrors, Plan, SubscriberPlan, import_subscriber, load

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_BAD_OUTCOMES = frozenset({OutcomeKind.FAILED, OutcomeKind.FATAL, OutcomeKind.FORCE_ABORTED})

log = logging.getLogger("taskvisor.cli")


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="taskvisor",
        description="Supervise commands and Python functions declared in a TOML file.",
    )
    parser.add_argument("--version", action="version", version=f"taskvisor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="supervise the tasks of FILE until they finish or Ctrl+C / SIGTERM",
        description="Supervise the tasks of FILE. Ctrl+C or SIGTERM stops them gracefully "
        "within the grace period; a second one forces.",
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
        description="Validate FILE: syntax, every key and value, and that every call target "
        "imports. Runs nothing.",
    )
    check.add_argument("file", metavar="FILE", help="a taskvisor TOML file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskvisor`` command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _check(args.file)
        return _run(args.file, args.log_level)
    except KeyboardInterrupt:
        print("taskvisor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _report_errors(errors: FileErrors) -> int:
    for message in errors.messages:
        print(f"taskvisor: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _check(file: str) -> int:
    try:
        plan = load(file)
    except FileErrors as errors:
        return _report_errors(errors)
    for warning in plan.warnings:
        print(f"taskvisor: warning: {warning}", file=sys.stderr)
    names = ", ".join(spec.name for spec in plan.specs)
    parts = [f"{len(plan.specs)} task{'s' if len(plan.specs) != 1 else ''} ({names})"]
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
    try:
        return asyncio.run(_supervise(plan))
    except FileErrors as errors:
        return _report_errors(errors)


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
    if not any(sub.type == "log" for sub in plan.subscribers):
        built.subscribers.append(import_subscriber("log")())
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


def _narrator(grace: float) -> Callable[[Event], None]:
    """A subscriber that tells the person at the terminal what shutdown is doing."""

    def taskvisor_cli(event: Event) -> None:
        if event.kind is EventKind.SHUTDOWN_REQUESTED:
            if event.reason and event.reason.startswith("signal"):
                log.info(
                    "%s: stopping every task (grace %gs); press Ctrl+C again to force",
                    event.reason,
                    grace,
                )
            elif event.reason != "natural completion":
                log.info("stopping every task (grace %gs)", grace)
        elif event.kind is EventKind.GRACE_EXCEEDED:
            log.warning("shutdown: %s", event.reason)  # the reason says why (SPEC §13)

    return taskvisor_cli


async def _supervise(plan: Plan) -> int:
    built = _build_subscribers(plan)
    config = replace(plan.config, handle_signals=True)
    sup = Supervisor(
        config=config,
        defaults=plan.defaults,
        subscribers=[*built.subscribers, _narrator(config.grace)],
    )
    if built.prometheus is not None:
        built.prometheus.bind(sup)
    loop = asyncio.get_running_loop()
    status: Any = None
    stopper: list[asyncio.Task[Any]] = []
    try:
        await sup.start()
        if plan.status is not None:
            from .._status import StatusServer

            host, port = plan.status
            status = StatusServer(sup, host, port, metrics=_metrics_source(built.prometheus))
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
        handles = [sup.add(spec) for spec in plan.specs]
        if status is not None:
            for handle in handles:
                status.track(handle)
        timer = None
        if plan.stop_after is not None:

            def stop_after() -> None:
                log.info("stop_after (%gs) reached", plan.stop_after)
                stopper.append(loop.create_task(sup.shutdown()))

            timer = loop.call_later(plan.stop_after, stop_after)
        loop.call_soon(_announce, sup, plan, len(handles), signal.getsignal(signal.SIGINT), 0)
        report = await sup.run([])
        if timer is not None:
            timer.cancel()
    finally:
        if status is not None:
            await status.stop()
        built.close()
    return _summarise(handles, report.grace_exceeded)


def _announce(sup: Supervisor, plan: Plan, count: int, before: object, tries: int) -> None:
    """Say the run is ready once ``Supervisor.run`` handles the signals (scripts wait for it)."""
    if sup.closed:
        return
    if signal.getsignal(signal.SIGINT) is before and tries < 100:
        asyncio.get_running_loop().call_soon(_announce, sup, plan, count, before, tries + 1)
        return
    log.info(
        "supervising %d task%s from %s (pid %d); Ctrl+C or SIGTERM stops them",
        count,
        "" if count == 1 else "s",
        plan.path,
        os.getpid(),
    )


def _summarise(handles: list[TaskHandle], grace_exceeded: bool) -> int:
    bad = grace_exceeded
    for handle in handles:
        outcome = handle.outcome
        if outcome is None:  # cannot happen after shutdown; be honest if it does
            log.warning("task %r: no outcome", handle.name)
            bad = True
            continue
        attempts = f"{outcome.attempts} attempt{'' if outcome.attempts == 1 else 's'}"
        reason = f": {outcome.reason}" if outcome.reason and outcome.kind in _BAD_OUTCOMES else ""
        level = logging.WARNING if outcome.kind in _BAD_OUTCOMES else logging.INFO
        log.log(level, "task %r %s after %s%s", handle.name, outcome.kind.value, attempts, reason)
        if outcome.kind in _BAD_OUTCOMES:
            bad = True
    return EXIT_FAILED if bad else EXIT_OK
