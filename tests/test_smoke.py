"""A first end-to-end check that the package imports and supervises."""

from __future__ import annotations

import taskvisor as tv


async def test_run_once_completes() -> None:
    ran: list[int] = []

    async def work(ctx: tv.TaskContext) -> None:
        ran.append(ctx.attempt)

    report = await tv.Supervisor().run([tv.TaskSpec.once("w", work)])
    assert ran == [1]
    assert report.grace_exceeded is False
