"""What both engines share: started and closed as a context manager, woken when a job is queued."""

from __future__ import annotations

import threading
from typing import Self

from workflows.metrics import EngineMetrics


class BackgroundEngine:
    """Base of the engines; subclasses implement :meth:`start` and :meth:`close`. ``metrics``: the engine's own
    (its registry is served by the provider that embeds it, or by ``c2d engine``)."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self.wakeup = threading.Event()
        self.metrics = metrics

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wake(self) -> None:
        """A job was queued or a stop requested: look now rather than at the next poll."""
        self.wakeup.set()
