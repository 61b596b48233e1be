"""Ready-made subscribers that need nothing beyond the standard library.

- ``LogSubscriber``: one ``logging`` record per event, every field also in ``extra``.
- ``JsonLinesSubscriber``: one JSON object per line, to a stream or a file it owns.

Integrations with third-party libraries live in ``taskvisor.contrib`` (optional extras).
"""

from __future__ import annotations

from ._jsonl import JsonLinesSubscriber
from ._logging import LogSubscriber

__all__ = ["JsonLinesSubscriber", "LogSubscriber"]

for _name in ("JsonLinesSubscriber", "LogSubscriber"):
    globals()[_name].__module__ = __name__
del _name
