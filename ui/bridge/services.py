"""The app's parts, built and wired once: settings, history, network thread, chat, contribution.

Widgets get these objects and talk to them through signals; nothing here knows about widgets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from corolla.app import settings as settings_file
from corolla.app.chat.history import ConversationStore
from corolla.app.contribute.state import ContributionState, Phase
from corolla.app.errors import SettingsError
from corolla.app.settings import Settings
from corolla.app.swarm.catalog import SwarmModel, choose
from corolla.app.swarm.connection import SwarmConnection
from corolla.app.swarm.local import LocalRouteFactory
from corolla.app.swarm.remote import SwarmRouteFactory
from corolla.app.swarm.route import InferenceRoute, RouteFactory, RouteListener
from corolla.core.generation import SamplingParams
from corolla.ui.bridge.api_process import ApiProcess
from corolla.ui.bridge.chat_backend import ChatBackend
from corolla.ui.bridge.contribution import ContributionController
from corolla.ui.bridge.conversation import ConversationController
from corolla.ui.bridge.model_catalog import ModelCatalog
from corolla.ui.bridge.swarm_monitor import SwarmMonitor
from corolla.ui.bridge.trio_thread import TrioThread
from corolla.ui.bridge.volunteer import VolunteerControl

log = logging.getLogger(__name__)


class _RouteSwitch:
    """The route factory the backend uses; swapped when the swarm settings change."""

    def __init__(self, target: RouteFactory) -> None:
        self.target = target

    def open(self, max_length: int, listener: RouteListener, adapter: str | None = None,
             prompt_tokens: int = 1) -> AbstractAsyncContextManager[InferenceRoute]:
        return self.target.open(max_length, listener, adapter, prompt_tokens)

    async def offered_adapters(self) -> list[str]:
        offered = getattr(self.target, "offered_adapters", None)
        return [] if offered is None else await offered()

    async def aclose(self) -> None:
        await self.target.aclose()


class Services(QObject):
    settings_changed = Signal(object)  # Settings
    settings_refused = Signal(str)  # why the settings were refused
    model_choice = Signal(str, bool)  # what came of choosing a model in the chat, whether it is now used

    def __init__(self, settings: Settings | None = None, *, persist: bool = True,
                 local_spans: list[tuple[int, int]] | None = None, history_path: Path | None = None) -> None:
        super().__init__()
        self.persist = persist
        self.settings_error = ""
        self.first_run = False  # the welcome is shown when the user's own settings never answered it
        if settings is None:
            try:
                settings = settings_file.load()
                self.first_run = not settings.welcomed
            except SettingsError as exc:  # shown to the user; the file is left as it is
                self.settings_error = f"{exc}. Using defaults until the settings are saved again."
                settings = Settings()
        self.settings = settings
        self.local_spans = local_spans
        self.trio = TrioThread().start()
        self.store = ConversationStore(history_path)
        self.connection: SwarmConnection | None = None
        self.chat_model = _model_folder(settings.chat_model)  # a model chosen in the chat; None: the settings'
        self._routes = _RouteSwitch(self._route_factory(settings))
        self.backend = ChatBackend(self.trio, self._model_path(), self._routes)
        self.backend.tuned_chosen.connect(lambda path: self._remember(tuned="" if path is None else str(path)))
        self.conversations = ConversationController(self.store, self.backend, settings.sampling,
                                                    settings.system_prompt)
        self.contribution = ContributionController()
        self.api = ApiProcess()
        self.volunteer = VolunteerControl(self.contribution)
        self.contribution.state_changed.connect(self._contribution_changed)
        self.monitor = SwarmMonitor(self.trio, self.connection)
        self.catalog = ModelCatalog(self.trio, lambda: self.connection,
                                    lambda: [self.settings.model, "default"])

    def _model_path(self) -> Callable[[], Path]:
        def resolve() -> Path:
            from corolla.core.model import resolve_model

            if self.chat_model is not None:
                return self.chat_model
            return resolve_model(self.settings.model, progress=False)

        return resolve

    def _route_factory(self, settings: Settings) -> RouteFactory:
        if self.local_spans is not None:
            return LocalRouteFactory(Path(self._model_path()()), self.local_spans)
        return self._swarm_routes(list(settings.initial_peers))

    def _swarm_routes(self, peers: list[str]) -> RouteFactory:
        self.connection = SwarmConnection(peers, self._model_path(), lambda: self.trio.nursery)
        return SwarmRouteFactory(self.connection)

    def _use_swarm(self, peers: list[str]) -> None:
        """Route the chat (and the swarm view) through the swarm of `peers` from the next reply on."""
        previous = self._routes.target
        self._routes.target = self._swarm_routes(peers)
        self.monitor.set_connection(self.connection)
        self.trio.spawn(previous.aclose)

    def choose_model(self, model: SwarmModel) -> None:
        """Chat with `model` from the next reply on, when the swarm serves all of it and a copy of it is
        here; else say why not (`model_choice`)."""
        path, text = choose(model, self.catalog.copies)
        if path is not None and path != self.chat_model:
            self.chat_model = path
            self._remember(chat_model=str(path))
            if self.local_spans is None and self.connection is not None:
                self._use_swarm(list(self.connection.initial_peers))
            self.backend.use_model(self._model_path())
        self.model_choice.emit(text, path is not None)

    def start(self) -> None:
        """Load the model's head in the background, with the tuned prompts chosen last time; resume
        contributing if it was on."""
        self.backend.load()
        if self.settings.tuned:  # checked against the model again: a refusal says why, in the picker
            self.backend.choose_tuned(Path(self.settings.tuned))
        if self.settings.contribute:
            self.contribution.start(self.settings)

    def set_contributing(self, on: bool) -> None:
        if on:
            self.contribution.start(self.settings)
        else:
            self.contribution.stop()
        self._save(self.settings.replace(contribute=on))

    def welcome(self, choice: str, address: str = "") -> None:
        """The first-run choice: "public", "private" (with `address`), "here" or "later"."""
        from corolla.app.settings import default_bootstrap_peers

        new = self.settings.replace(welcomed=True)
        if choice == "public":
            new = new.replace(initial_peers=default_bootstrap_peers())
        elif choice == "private":
            new = new.replace(initial_peers=(address,))
        elif choice == "here":  # a new swarm on this PC: it must serve every block
            from corolla.core.model import ModelInfo, resolve_model

            num_blocks = ModelInfo.load(resolve_model(new.model, progress=False)).num_blocks
            new = new.replace(initial_peers=(), blocks=f"0:{num_blocks}")
        self.first_run = False
        self.apply_settings(new)
        if choice == "here":
            self.set_contributing(True)

    def set_api(self, on: bool) -> None:
        """Serve the OpenAI-compatible API on this computer, on the swarm the chat uses."""
        if on:
            self.api.start(list(self.connection.initial_peers) if self.connection is not None else [])
        else:
            self.api.stop()

    def apply_settings(self, new: Settings) -> None:
        """Use and remember `new` (already validated); a changed swarm reconnects on next use."""
        old = self.settings
        if new.start_at_login != old.start_at_login:
            from corolla.app.contribute.autostart import AutostartError, set_start_at_login

            try:
                set_start_at_login(new.start_at_login)
            except AutostartError as exc:
                self.settings_refused.emit(str(exc))
                new = new.replace(start_at_login=old.start_at_login)
        self._save(new)
        if new.initial_peers != old.initial_peers and self.local_spans is None:
            self._use_swarm(list(new.initial_peers))
        served = ("model", "device", "blocks", "num_blocks", "port", "initial_peers", "max_gpu_memory",
                  "cpu_threads", "nickname")
        if self.contribution.state.active and any(getattr(new, f) != getattr(old, f) for f in served):
            self.contribution.restart(new)

    def remember_sampling(self, sampling: SamplingParams) -> None:
        """The chat's sampling knobs, kept as the default for next time."""
        self._save(self.settings.replace(sampling=sampling))

    def remember_adapter(self, name: str | None) -> None:
        """The adapter the user picked in the chat (None: the base model), picked again at the next start
        once the swarm offers it."""
        self._remember(adapter=name or "")

    def _remember(self, **choices: str) -> None:
        """Keep the chat's choices (model, tuned prompts, adapter) for the next start."""
        if any(getattr(self.settings, name) != value for name, value in choices.items()):
            self._save(self.settings.replace(**choices))

    def _save(self, new: Settings) -> None:
        self.settings = new
        if self.persist:
            try:
                settings_file.save(new)
            except (SettingsError, OSError) as exc:
                self.settings_refused.emit(str(exc))
                return
        self.settings_changed.emit(new)

    def _contribution_changed(self, state: ContributionState) -> None:
        if state.phase is Phase.ERROR:
            log.warning("contribution failed: %s", state.error)
        # With no swarm set, the server started a new one: the chat joins it through this machine.
        if (state.join_address and not self.settings.initial_peers and self.local_spans is None
                and (self.connection is None or self.connection.initial_peers != [state.join_address])):
            self._use_swarm([state.join_address])

    def shutdown(self) -> None:
        """Stop everything this app started: the reply, the server process, the network thread."""
        self.conversations.close()
        self.monitor.stop()
        self.volunteer.stop()
        self.contribution.shutdown()
        self.api.stop(wait_ms=5000)
        self.trio.stop(timeout=5)  # cancels every task, the swarm connection's included
        self.store.close()


def _model_folder(text: str) -> Path | None:
    """The model folder remembered as the chat's choice, if it is still there."""
    path = Path(text) if text else None
    return path if path is not None and (path / "config.json").is_file() else None
