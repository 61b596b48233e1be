"""The status server: one supervisor's tasks over HTTP (needs the ``status`` extra, aiohttp).

``StatusServer(sup, host="127.0.0.1", port=8765, *, metrics=None, keep_finished=1000,
keep_events=50)`` serves, on the supervisor's own loop, ``/tasks`` (JSON: every registered
task, the outcomes of finished ones, the latest events), ``/events`` (server-sent events, one
JSON object per supervisor event, ending after shutdown), ``/metrics`` (Prometheus text, when
a metrics source is given) and ``/`` (a self-contained HTML page that shows every task live).
``await server.start()`` binds it (``server.url`` then names it), ``await server.stop()``
ends it and every open event stream. There is no authentication: keep it on loopback.
"""

from ._status import StatusServer

__all__ = ["StatusServer"]
