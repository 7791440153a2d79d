"""Small helpers shared by tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def race(count: int, action: Callable[[], T]) -> list[T | BaseException]:
    """Run ``action`` in ``count`` threads released together; return each result or raised exception."""
    barrier = threading.Barrier(count)
    outcomes: list[T | BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            result: T | BaseException = action()
        except BaseException as exc:  # reported to the caller, which asserts on it
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
