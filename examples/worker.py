"""A long-running worker that stops gracefully on Ctrl+C (``python -m examples.worker``).

``Supervisor.run`` turns SIGINT and SIGTERM into a graceful shutdown: every task is asked to
stop (its current ``await`` raises ``CancelledError``) and gets up to ``grace`` seconds to
clean up; a second Ctrl+C skips the rest of the grace period. Here the worker uses that time
to finish the job it holds, so no job is lost half-done, then lets the cancellation go on.

Run it and press Ctrl+C. With ``--short`` it presses Ctrl+C itself (it sends itself SIGINT)
while its third job is in progress.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys

import taskvisor as tv


async def main(short: bool = False) -> int:
    jobs: asyncio.Queue[int] = asyncio.Queue(maxsize=10)
    job_time = 0.2 if short else 1.0
    done: list[int] = []

    async def produce(ctx: tv.TaskContext) -> None:
        for n in itertools.count(1):
            await jobs.put(n)  # a stop request cancels this wait: nothing is lost

    async def process(job: int) -> None:
        await asyncio.sleep(job_time)  # stands for real work
        done.append(job)
        print(f"job {job} done", flush=True)

    async def work(ctx: tv.TaskContext) -> None:
        while True:
            job = await jobs.get()
            print(f"job {job} started", flush=True)
            if short and job == 3:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl+C does
            running = asyncio.ensure_future(process(job))
            try:
                await asyncio.shield(running)
            except asyncio.CancelledError:
                # The stop request: finish the job in hand (within grace), then stop.
                print(f"stop requested: finishing job {job} first", flush=True)
                await running
                raise

    sup = tv.Supervisor(tv.SupervisorConfig(grace=5.0))  # handle_signals=True by default
    print("working; press Ctrl+C to stop", flush=True)
    report = await sup.run(
        [tv.TaskSpec.restartable("producer", produce), tv.TaskSpec.restartable("worker", work)]
    )
    print(f"stopped gracefully: grace_exceeded={report.grace_exceeded}, jobs done: {done}")
    return 0 if not report.grace_exceeded else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(short="--short" in sys.argv)))
