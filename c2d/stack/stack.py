"""The embedded stack: its components, started in order, checked, stopped in reverse order.

A failure while starting stops what was already started (no half-started stack survives) and raises a
one-line :class:`StackError` naming the component and its log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from c2d.db.migrate import available
from c2d.db.pool import migrate_dsn
from c2d.exceptions import C2DError, StackError
from c2d.settings import Settings
from c2d.stack.anvil import EmbeddedChain, ExternalChain, OceanContracts
from c2d.stack.postgres import EmbeddedPostgres, ExternalPostgres, database_dsn
from c2d.stack.procs import recorded_alive, stop_recorded

Progress = Callable[[str], None]


class Component(Protocol):
    name: str

    def start(self) -> None: ...

    def check(self) -> str: ...

    def stop(self) -> None: ...


class SchemaMigrations:
    """Applies the database migrations (part of start-up, nothing to stop)."""

    name = "migrations"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.applied: list[int] = []

    def start(self) -> None:
        self.applied = migrate_dsn(database_dsn(self.settings))

    def check(self) -> str:
        return f"schema version {len(available())}"

    def stop(self) -> None:
        return None


class LocalStore:
    """The results store folder of the ``local`` storage backend."""

    name = "store"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self) -> None:
        self.settings.store_dir.mkdir(parents=True, exist_ok=True)
        self.settings.store_dir.chmod(0o700)

    def check(self) -> str:
        if not self.settings.store_dir.is_dir():
            raise StackError(f"results store {self.settings.store_dir} is missing")
        return f"results store {self.settings.store_dir}"

    def stop(self) -> None:
        return None


@dataclass
class ComponentState:
    name: str
    healthy: bool
    detail: str


class Stack:
    """Owns the components of one data dir. Use as a context manager or call up()/down()."""

    def __init__(self, settings: Settings, progress: Progress = lambda _m: None) -> None:
        self.settings = settings
        self.progress = progress
        self.components: list[Component] = self._components()
        self._started: list[Component] = []

    def _components(self) -> list[Component]:
        s = self.settings
        components: list[Component] = [
            ExternalPostgres(s) if s.postgres.dsn else EmbeddedPostgres(s),
            SchemaMigrations(s),
            EmbeddedChain(s) if s.chain.embedded else ExternalChain(s),
            OceanContracts(s, lambda msg: self.progress(f"  {msg}")),
        ]
        if s.storage.backend == "local":
            components.append(LocalStore(s))
        return components

    def up(self) -> list[ComponentState]:
        leftovers = recorded_alive(self.settings.run_dir)
        if leftovers:
            raise StackError(
                f"a stack is already running in {self.settings.data_dir} ({', '.join(leftovers)}); run `c2d down` first"
            )
        for folder in (self.settings.data_dir, self.settings.run_dir, self.settings.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for component in self.components:
            began = time.monotonic()
            self.progress(f"starting {component.name} ...")
            try:
                component.start()
            except C2DError:
                self._started.append(component)  # it may have spawned a process before failing
                self.down()
                raise
            self._started.append(component)
            self.progress(f"{component.name} ready ({time.monotonic() - began:.1f} s)")
        return self.check()

    def check(self) -> list[ComponentState]:
        states: list[ComponentState] = []
        for component in self.components:
            try:
                states.append(ComponentState(component.name, True, component.check()))
            except C2DError as exc:
                states.append(ComponentState(component.name, False, str(exc)))
        return states

    def down(self) -> None:
        for component in reversed(self._started):
            self.progress(f"stopping {component.name}")
            component.stop()
        self._started.clear()
        # Anything recorded but not owned by this object (a crashed earlier run).
        for name in stop_recorded(self.settings.run_dir):
            self.progress(f"stopped leftover {name}")

    def __enter__(self) -> Stack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
