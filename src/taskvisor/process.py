"""Supervised external programs: ``command(argv)`` builds a task body that runs one.

Each attempt starts the program in a process group of its own (``argv`` is run directly, no
shell) and waits for it; the exit code decides how the attempt ended. Every line the program
writes to stdout or stderr becomes a ``logging`` record on ``taskvisor.process.<task name>``,
read by the event loop as it arrives (never blocking it). A Python traceback is one record,
not one per line (see ``Watch.output`` for the rule).

Stopping: when the attempt is stopped (``cancel``, ``remove``, shutdown, or the spec's
attempt ``timeout``), ``stop_signal`` goes to the whole group; whatever is still alive
``stop_timeout`` seconds later gets ``SIGKILL``. The attempt ends only once the group is
gone, so no orphan is left behind. The supervisor's ``grace`` (``SupervisorConfig``, 60 s by
default) bounds the whole stop: when it runs out before ``stop_timeout``, the supervisor
cancels the attempt again and the group is killed at once. Keep ``stop_timeout`` below
``grace`` to give the program its full ``stop_timeout``.

Limits: if the supervising process itself is killed with ``SIGKILL`` it cannot clean up, and
its programs keep running. A program that moves its children to another process group or
session (``setsid``, daemonising) takes them out of reach.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from ._context import TaskContext
from ._errors import Fail, Fatal, TaskError
from ._validate import check_duration

__all__ = ["Watch", "command"]

MAX_LINE = 65536
"""Longer output lines are logged in pieces of this many bytes."""

_KILL_WAIT = 2.0
"""After ``SIGKILL``, how long to wait for the rest of the group to vanish before warning."""

_DRAIN_WAIT = 1.0
"""Once the group is gone, how long to wait for output still in the pipes."""

_REASON_TAIL = 200
"""At most this many characters of the last stderr line go into a failure's reason."""

GROUP_QUIET = 0.1
"""Seconds without a new line after which a traceback being gathered is emitted as it is."""

GROUP_MAX_LINES = 1000
"""A traceback longer than this many lines is emitted in several records."""

_TRACEBACK_STARTS = (
    "Traceback (most recent call last):",
    "Exception Group Traceback (most recent call last):",
)
_CHAIN_MARKERS = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


class Watch:
    """Observes one attempt of a command, and may end it; ``command(watch=...)`` makes one.

    The base class does what ``command`` does without a watch: it logs each output record.
    Subclasses (the ``taskvisor`` command line's probes and output files) override the
    methods they need. Every method runs on the event loop and must not block.
    """

    preexec: Callable[[], None] | None = None
    """Called in the child between ``fork`` and ``exec`` (resource limits); keep it tiny."""

    judges = False
    """Whether ``verdict`` may end the attempt: only then is it awaited beside the program."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx

    @property
    def log(self) -> logging.Logger:
        """The task's logger, ``taskvisor.process.<task name>``."""
        return logging.getLogger(f"taskvisor.process.{self.ctx.name}")

    def started(self, pid: int) -> None:
        """The program runs as ``pid`` (also its process group id)."""

    def output(self, stream: str, text: str, pid: int | None) -> None:
        """One record of output: a line, or a whole Python traceback.

        ``stream`` is ``"stdout"`` or ``"stderr"``. The grouping rule: a line starting with
        ``Traceback (most recent call last):`` opens a record; indented lines, blank lines,
        the chaining sentences ("During handling of the above exception…", "The above
        exception was the direct cause…") and further ``Traceback`` lines join it; the first
        other line (the ``ValueError: boom`` line) joins it too and ends it unless a chaining
        line follows. A record still open after ``GROUP_QUIET`` seconds without output, at
        the end of the output, or at ``GROUP_MAX_LINES`` lines is emitted as it is.
        """
        level = logging.WARNING if stream == "stderr" else logging.INFO
        log = self.log
        if log.isEnabledFor(level):
            log.log(level, "%s", text, extra={"taskvisor_stream": stream, "taskvisor_pid": pid})

    async def verdict(self) -> BaseException:
        """Returns the exception that ends the attempt early (the program is stopped first).

        The base class never returns: the program's exit decides.
        """
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")  # pragma: no cover

    def ended(self) -> None:
        """The attempt is over (the program and its group are gone); release what it holds."""


def command(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 10.0,
    fatal_exit_codes: Iterable[int] = (),
    success_exit_codes: Iterable[int] = (0,),
    watch: Callable[[TaskContext], Watch] | None = None,
) -> Callable[[TaskContext], Awaitable[None]]:
    """A task body that runs ``argv`` as a program, one process group per attempt.

    ``cwd``: working directory (default: the supervisor's). ``env``: variables added to (or
    overriding) the supervisor's environment, read when each attempt starts; the program
    also finds its task's name in ``TASKVISOR_TASK`` and the attempt number in
    ``TASKVISOR_ATTEMPT``.
    An exit code in ``success_exit_codes`` is a success; one in ``fatal_exit_codes`` raises
    ``Fatal(exit_code=code)``; any other raises ``Fail(exit_code=code)``. A program killed by
    a signal has the exit code ``-signum``. A program that cannot be started (not found, not
    executable, missing ``cwd``) is ``Fatal``; a missing ``cwd`` is named as such. On a stop:
    ``stop_signal`` to the group, then ``SIGKILL`` after ``stop_timeout`` seconds.
    ``watch``: called at the start of each attempt; the ``Watch`` it returns sees the pid and
    every output record, and its ``verdict`` may end the attempt early (see ``Watch``).
    """
    return _Command(
        argv,
        cwd=cwd,
        env=env,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        fatal_exit_codes=fatal_exit_codes,
        success_exit_codes=success_exit_codes,
        watch=watch,
    )


def _check_argv(argv: object) -> tuple[str, ...]:
    if isinstance(argv, str | bytes) or not isinstance(argv, Sequence):
        raise TypeError(f"argv must be a list of str (no shell is used), got {type(argv).__name__}")
    items: list[str] = []
    for i, arg in enumerate(argv):
        if not isinstance(arg, str | os.PathLike):
            raise TypeError(f"argv[{i}] must be a str, got {type(arg).__name__}")
        text = os.fspath(arg)
        if not isinstance(text, str):
            raise TypeError(f"argv[{i}] must be a str path, got bytes")
        if "\0" in text:
            raise ValueError(f"argv[{i}] must not contain NUL characters")
        items.append(text)
    if not items:
        raise ValueError("argv must name a program: got an empty list")
    if not items[0]:
        raise ValueError("argv[0] must be a non-empty program name or path")
    return tuple(items)


def _check_env(env: object) -> dict[str, str] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise TypeError(f"env must be a mapping of str to str, got {type(env).__name__}")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(f"env: {key!r} is not a valid variable name")
        if not isinstance(value, str):
            raise TypeError(f"env[{key!r}] must be a str, got {type(value).__name__}")
        if "\0" in value:
            raise ValueError(f"env[{key!r}] must not contain NUL characters")
        out[key] = value
    return out


_CODES: dict[frozenset[int], frozenset[int]] = {}
"""One shared frozenset per distinct set of exit codes (a few hundred commands share two)."""


def _check_codes(name: str, codes: object) -> frozenset[int]:
    if isinstance(codes, str | bytes) or not isinstance(codes, Iterable):
        raise TypeError(f"{name} must be a collection of int, got {type(codes).__name__}")
    out: set[int] = set()
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"{name} must hold ints, got {type(code).__name__}")
        out.add(code)
    frozen = frozenset(out)
    return _CODES.setdefault(frozen, frozen)


def _check_signal(value: object) -> signal.Signals:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"stop_signal must be a signal number, got {type(value).__name__}")
    try:
        sig = signal.Signals(value)
    except ValueError:
        raise ValueError(f"stop_signal must be a valid signal number, got {value!r}") from None
    if sig is signal.SIGSTOP:
        raise ValueError("stop_signal must not be SIGSTOP: a stopped program never exits")
    return sig


def signal_name(code: int) -> str:
    """``SIGTERM`` for ``15``; ``signal 99`` for a number with no name."""
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


class _Command:
    """The task body ``command()`` returns (internal)."""

    __slots__ = (
        "argv",
        "cwd",
        "env",
        "env_bytes",
        "fatal_exit_codes",
        "stop_signal",
        "stop_timeout",
        "success_exit_codes",
        "watch",
    )

    def __init__(
        self,
        argv: object,
        *,
        cwd: object,
        env: object,
        stop_signal: object,
        stop_timeout: object,
        fatal_exit_codes: object,
        success_exit_codes: object,
        watch: object = None,
    ) -> None:
        self.argv = _check_argv(argv)
        if cwd is not None and not isinstance(cwd, str | os.PathLike):
            raise TypeError(f"cwd must be a path or None, got {type(cwd).__name__}")
        self.cwd: str | None = None if cwd is None else os.fspath(cwd)
        self.env = _check_env(env)
        self.env_bytes = {os.fsencode(k): os.fsencode(v) for k, v in (self.env or {}).items()}
        self.stop_signal = _check_signal(stop_signal)
        timeout = check_duration("stop_timeout", stop_timeout)
        assert timeout is not None
        self.stop_timeout = timeout
        self.fatal_exit_codes = _check_codes("fatal_exit_codes", fatal_exit_codes)
        self.success_exit_codes = _check_codes("success_exit_codes", success_exit_codes)
        both = self.fatal_exit_codes & self.success_exit_codes
        if both:
            raise ValueError(
                f"exit codes {sorted(both)} are in both fatal_exit_codes and success_exit_codes"
            )
        if watch is not None and not callable(watch):
            raise TypeError(f"watch must be a callable or None, got {type(watch).__name__}")
        self.watch: Callable[[TaskContext], Watch] = watch or Watch

    def __repr__(self) -> str:
        return f"command({list(self.argv)!r})"

    async def __call__(self, ctx: TaskContext) -> None:
        watch = self.watch(ctx)
        try:
            await self._attempt(ctx, watch)
        finally:
            watch.ended()

    async def _attempt(self, ctx: TaskContext, watch: Watch) -> None:
        log = watch.log
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        readers = ((out_r, "stdout"), (err_r, "stderr"))
        followers: list[_Follower] = []
        handed = 0  # read ends given to _follow, which owns them from then on
        try:
            try:
                for fd, stream in readers:
                    handed += 1
                    followers.append(await _follow(loop, fd, watch, stream))
                # Bytes, as os.environb holds them: copying references, not decoding every
                # variable; built only now, so a burst of starts does not hold many copies.
                env: dict[bytes, bytes] = {
                    **os.environb,
                    **self.env_bytes,
                    b"TASKVISOR_TASK": os.fsencode(ctx.name),
                    b"TASKVISOR_ATTEMPT": b"%d" % ctx.attempt,
                }
                proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    cwd=self.cwd,
                    env=env,
                    process_group=0,
                    preexec_fn=watch.preexec,
                )
                del env  # a copy of the whole environment: not kept for the attempt's life
            finally:
                # The child has its own copies; ours must go for the pipes to reach EOF.
                os.close(out_w)
                os.close(err_w)
        except BaseException as exc:
            for fd, _ in readers[handed:]:
                os.close(fd)
            for f in followers:
                f.close()
            if isinstance(exc, OSError):
                raise self._cannot_start(exc) from exc
            raise
        pid = proc.pid
        for f in followers:
            f.protocol.pid = pid
        log.debug("started %r as pid %d", self, pid)
        watch.started(pid)
        stderr = followers[1]
        cancelled = False
        early: BaseException | None = None
        try:
            try:
                if not watch.judges:
                    code = await proc.wait()
                else:
                    early = await _race(proc, watch)
                    if early is not None:
                        cancelled = await self._stop_group(proc, pid, log)
                    code = await proc.wait()
            except asyncio.CancelledError:
                cancelled = True
                await self._stop_group(proc, pid, log)
                raise
            # The program exited by itself: what it left running in its group would be orphaned.
            if _group_alive(pid):
                log.debug("process group %d outlived its leader; stopping it", pid)
                cancelled = await self._stop_group(proc, pid, log) or cancelled
        finally:
            if await _drain(followers):
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        if early is not None:
            raise early
        self._judge(code, stderr.last_line)

    def _cannot_start(self, exc: OSError) -> TaskError:
        """``Fatal`` when retrying cannot help (not found, not allowed, no cwd); else ``Fail``."""
        program = self.argv[0]
        cwd = self.cwd
        text = exc.strerror or str(exc)
        if cwd is not None and (exc.filename == cwd or not os.path.isdir(cwd)):
            if not os.path.exists(cwd):
                return Fatal(f"cannot start {program!r}: working directory {cwd} does not exist")
            if not os.path.isdir(cwd):
                return Fatal(
                    f"cannot start {program!r}: working directory {cwd} is not a directory"
                )
            return Fatal(f"cannot start {program!r}: cannot enter working directory {cwd}: {text}")
        if isinstance(exc, FileNotFoundError | PermissionError | NotADirectoryError):
            return Fatal(f"cannot start {program!r}: {text}")
        return Fail(f"cannot start {program!r}: {text}")

    async def _stop_group(
        self, proc: asyncio.subprocess.Process, pgid: int, log: logging.Logger
    ) -> bool:
        """Signal the group, escalate to ``SIGKILL``, reap; True if cancelled meanwhile.

        A further cancellation (the supervisor's force-stop) skips straight to ``SIGKILL``.
        """
        cancelled = False
        sig = self.stop_signal
        _killpg(pgid, sig, log)
        deadline = time.monotonic() + self.stop_timeout
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                await proc.wait()
                await _wait_group_gone(pgid, deadline)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            cancelled = True
        if proc.returncode is None or _group_alive(pgid):
            if proc.returncode is None:
                log.warning(
                    "pid %d still running %.1fs after %s; sending SIGKILL",
                    pgid,
                    self.stop_timeout,
                    signal_name(sig),
                )
            _killpg(pgid, signal.SIGKILL, log)
        # SIGKILL is sent; the child watcher reaps the leader whether or not we wait, so a
        # further cancellation simply stops the waiting (a process stuck in the kernel
        # must not hold the supervisor).
        try:
            await proc.wait()
            gone = await _wait_group_gone(pgid, time.monotonic() + _KILL_WAIT)
        except asyncio.CancelledError:
            return True
        if not gone:
            log.warning("process group %d still exists after SIGKILL", pgid)
        return cancelled

    def _judge(self, code: int, last_line: str | None) -> None:
        if code in self.success_exit_codes:
            return
        program = self.argv[0]
        if code < 0:
            reason = f"{program} was killed by {signal_name(-code)} (exit code {code})"
        else:
            reason = f"{program} exited with code {code}"
        if last_line:
            tail = last_line if len(last_line) <= _REASON_TAIL else last_line[:_REASON_TAIL] + "…"
            reason = f"{reason}: {tail}"
        if code in self.fatal_exit_codes:
            raise Fatal(reason, exit_code=code)
        raise Fail(reason, exit_code=code)


def _loop_deadline(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + max(0.0, monotonic_deadline - time.monotonic())


def _killpg(pgid: int, sig: int, log: logging.Logger) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("not allowed to send %s to process group %d", signal_name(sig), pgid)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs.

    Zombies do not count: they are dead and only wait for their parent (often init, after
    reparenting) to collect them, which some inits do only every few seconds, and which
    nobody does when taskvisor is itself PID 1.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _has_running_member(pgid)


def _has_running_member(pgid: int) -> bool:
    """Linux: scan ``/proc`` for a member of ``pgid`` that is not a zombie. Elsewhere: True."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # it ended meanwhile
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _wait_group_gone(pgid: int, deadline: float) -> bool:
    """Poll until no process of the group is left, or ``deadline`` (monotonic) passes.

    Members other than the leader are not our children, so there is nothing to wait on but
    the group's existence.
    """
    pause = 0.002
    while _group_alive(pgid):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.1)
    return True


async def _race(proc: asyncio.subprocess.Process, watch: Watch) -> BaseException | None:
    """Wait for the program's exit or the watch's verdict; the verdict, if it came first."""
    waiter = asyncio.ensure_future(proc.wait())
    verdict = asyncio.ensure_future(watch.verdict())
    try:
        await asyncio.wait((waiter, verdict), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in (waiter, verdict):
            if not fut.done():
                fut.cancel()
    if waiter.done() and not waiter.cancelled():
        return None  # the program's own exit decides, even if both came at once
    try:
        return verdict.result()
    except Exception as exc:  # a broken watch still ends the attempt, never leaks the program
        return exc


class _Lines(asyncio.Protocol):
    """Turns a pipe's bytes into lines, and lines into records for the watch (internal).

    A line is split at 64 KiB. Python tracebacks are gathered into one record (rule in
    ``Watch.output``).
    """

    def __init__(self, watch: Watch, stream: str, done: asyncio.Future[None]) -> None:
        self._watch = watch
        self._stream = stream
        self._buf = bytearray()
        self._done = done
        self._group: list[str] = []
        self._closing = False  # the group's exception line was seen; only a chain goes on
        self._timer: asyncio.TimerHandle | None = None
        self.pid: int | None = None
        self.last_line: str | None = None
        self.transport: asyncio.ReadTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if b"\n" in data:
            *lines, rest = bytes(buf).split(b"\n")
            buf[:] = rest
            for line in lines:
                self._line(line)
        while len(buf) >= MAX_LINE:
            self._line(bytes(buf[:MAX_LINE]))
            del buf[:MAX_LINE]
        if self._group:
            self._arm()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._buf:
            self._line(bytes(self._buf))
            self._buf.clear()
        self._flush()
        if not self._done.done():
            self._done.set_result(None)

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if line.strip():
            self.last_line = line
        group = self._group
        if group:
            if self._joins(line):
                group.append(line)
                if len(group) >= GROUP_MAX_LINES:
                    self._flush()
                return
            self._flush()
        if line.lstrip(" +|").startswith(_TRACEBACK_STARTS):
            self._group.append(line)
            self._closing = False
        else:
            self._watch.output(self._stream, line, self.pid)

    def _joins(self, line: str) -> bool:
        """Whether ``line`` continues the traceback being gathered."""
        stripped = line.strip()
        if not stripped or stripped.startswith(_CHAIN_MARKERS):
            self._closing = False
            return True
        if self._closing:
            return False
        if line[0].isspace() or line.lstrip(" +|").startswith(_TRACEBACK_STARTS):
            return True
        self._closing = True  # the exception line: the traceback ends here unless chained
        return True

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(GROUP_QUIET, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        group = self._group
        if not group:
            return
        while group and not group[-1].strip():
            group.pop()
        text = "\n".join(group)
        group.clear()
        self._closing = False
        if text:
            self._watch.output(self._stream, text, self.pid)


class _Follower:
    """One output pipe being read: its protocol and the future set when it closes."""

    __slots__ = ("done", "protocol")

    def __init__(self, protocol: _Lines, done: asyncio.Future[None]) -> None:
        self.protocol = protocol
        self.done = done

    @property
    def last_line(self) -> str | None:
        return self.protocol.last_line

    def close(self) -> None:
        self.protocol._flush()
        if self.protocol.transport is not None:
            self.protocol.transport.close()


async def _follow(loop: asyncio.AbstractEventLoop, fd: int, watch: Watch, stream: str) -> _Follower:
    """Start reading ``fd`` (owned from now on) on the loop, handing records to ``watch``."""
    done: asyncio.Future[None] = loop.create_future()
    try:
        # Wrapping an fd does no I/O; the transport owns the file and closes it.
        pipe = open(fd, "rb", buffering=0)  # noqa: SIM115, ASYNC230
    except BaseException:
        os.close(fd)
        raise
    try:
        _, protocol = await loop.connect_read_pipe(lambda: _Lines(watch, stream, done), pipe)
    except BaseException:
        pipe.close()
        raise
    assert isinstance(protocol, _Lines)
    return _Follower(protocol, done)


async def _drain(followers: list[_Follower]) -> bool:
    """Wait briefly for output still in the pipes, then close them; True if cancelled.

    Normally the pipes reach EOF as soon as the group is gone; a program that escaped the
    group may still hold them open, so the wait is bounded.
    """
    cancelled = False
    pending = [f.done for f in followers if not f.done.done()]
    if pending:
        try:
            await asyncio.wait(pending, timeout=_DRAIN_WAIT)
        except asyncio.CancelledError:
            cancelled = True
    for f in followers:
        f.close()
    return cancelled
