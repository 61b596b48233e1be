"""Types of the optional C accelerator ``taskvisor._cevents`` (see ``_cevents.c``)."""

from collections.abc import Iterable, Iterator
from typing import Any

RECORD: int
"""Values per packed run, as this module was built (``_events.RECORD`` must agree)."""

class Unpacker:
    """Builds the events of packed logs, as ``_events.unpack_python`` does."""

    def __init__(
        self, event_type: type[Any], slots: tuple[Any, ...], slotted: Iterable[object]
    ) -> None: ...
    def __call__(self, log: list[Any], /) -> Iterator[Any]: ...
