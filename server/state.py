"""What the routes share: settings, the loaded model and its engine, erasers, keys, metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from eraser_store import Store
from eraser_store.store import StoreBase
from server import errors
from server.auth import KeyRing
from server.bridge import EventBridge
from server.engine_api import GenerationEngine
from server.erasers import ErasersOnDevice
from server.metrics import Metrics
from server.model_loader import LoadedModel
from server.replica import ReplicaView
from server.settings import ServerSettings


@dataclass
class ServerState:
    settings: ServerSettings
    store: Store  # where the admin routes write
    keyring: KeyRing | None
    metrics: Metrics
    loaded: LoadedModel | None = None
    engine: GenerationEngine | None = None
    erasers: ErasersOnDevice | None = None
    load_error: str | None = None
    draining: bool = False
    view: ReplicaView | None = None  # a store shared with other replicas, seen from here
    started: int = field(default_factory=lambda: int(time.time()))
    _bridge: EventBridge | None = None

    def bridge(self) -> EventBridge:
        """The engine-to-loop bridge of the running event loop (made on first use in it)."""
        if self._bridge is None:
            self._bridge = EventBridge(asyncio.get_running_loop())
        return self._bridge

    @property
    def index(self) -> StoreBase:
        """Where requests look erasers up: this replica's view of a shared store, else the
        store itself (a directory's index is read at each request)."""
        return self.store if self.view is None else self.view

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.alive and not self.draining

    @property
    def failure(self) -> str | None:
        """Why this process can never serve (failed load, dead engine thread); None if it can."""
        if self.load_error:
            return self.load_error
        if self.engine is not None and not self.engine.alive:
            return "the engine thread has stopped"
        return None

    def require_ready(self) -> tuple[LoadedModel, GenerationEngine, ErasersOnDevice]:
        if self.draining:
            raise errors.unavailable("the server is shutting down", code="shutting_down")
        if failure := self.failure:  # no wait repairs it: no Retry-After
            why = f"the model failed to load: {failure}" if self.load_error else failure
            why += "; restart the server"
            raise errors.unavailable(why, code="failed", retry_after_s=None)
        if self.engine is None:
            raise errors.unavailable("the model is still loading", code="not_ready")
        return self.loaded, self.engine, self.erasers
