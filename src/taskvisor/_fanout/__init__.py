"""The subscriber fan-out: one publish path, and a bounded queue per subscriber.

::

    Bus.publish(kind, …) ─┬─► [late-built log] ── once per loop iteration ──► sync on_event()s
                          ├─► [queue 1] ──► worker 1 ──► async subscriber.on_event()
                          ├─► [queue 2] ──► worker 2 ──► blocking subscriber (its own thread)
                          └─► [queue 3] ──► ``async for event in sup.events()``

Where each piece lives: ``_bus.py`` (publishing, kind filters, counts, overflow episodes,
panics, paced batch admission, close), ``_sync.py`` (the late-built log of the sync
subscribers and its dispatcher), ``_workers.py`` (the async worker and the blocking
thread), ``_stream.py`` (``EventStream``), ``_channel.py`` (one subscriber's state).

Rules: publishing never blocks and never awaits; a subscriber with no room drops that event
for itself alone, reported once per overflow episode (``full``, then ``recovered`` with the
count); an ``on_event`` that raises is reported as ``SUBSCRIBER_PANICKED`` and its consumer
goes on; diagnostic events never cause further diagnostics; ``close`` drains every queue
under one shared deadline.
"""

from ._bus import Bus
from ._stream import EventStream

__all__ = ["Bus", "EventStream"]
