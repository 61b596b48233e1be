"""Process-wide switches for test suites, flipped through ``taskvisor.testing`` (internal)."""

from __future__ import annotations

zero_backoff = 0
"""While > 0 (``taskvisor.testing.no_backoff()`` is active, possibly nested), every retry
after a failure waits 0 s instead of its policy's delay. Read by ``_actor.drive``."""
