"""An ``Event`` as plain data: enums as their labels, ``TaskId`` as ``int`` (internal)."""

from __future__ import annotations

import traceback
from dataclasses import fields

from .. import Event

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Event))
"""Every ``Event`` field, in declaration order (the JSON lines key order; ``error`` is written
as its formatted ``traceback``)."""

Plain = str | int | float


def plain_fields(event: Event) -> dict[str, Plain]:
    """The event's set fields as plain JSON-ready values; ``None`` fields are left out."""
    d: dict[str, Plain] = {"seq": event.seq, "at": event.at, "kind": event.kind.value}
    if event.task is not None:
        d["task"] = event.task
    if event.task_id is not None:
        d["task_id"] = int(event.task_id)
    if event.attempt is not None:
        d["attempt"] = event.attempt
    if event.reason is not None:
        d["reason"] = event.reason
    if event.exit_code is not None:
        d["exit_code"] = event.exit_code
    if event.delay is not None:
        d["delay"] = event.delay
    if event.timeout is not None:
        d["timeout"] = event.timeout
    if event.duration is not None:
        d["duration"] = event.duration
    if event.backoff_source is not None:
        d["backoff_source"] = event.backoff_source.value
    if event.outcome is not None:
        d["outcome"] = event.outcome.value
    if event.rejection is not None:
        d["rejection"] = event.rejection.value
    if event.slot is not None:
        d["slot"] = event.slot
    if event.error is not None:
        d["traceback"] = "".join(traceback.format_exception(event.error))
    if event.fence is not None:
        d["fence"] = event.fence
    if event.node is not None:
        d["node"] = event.node
    if event.dropped is not None:
        d["dropped"] = event.dropped
    return d
