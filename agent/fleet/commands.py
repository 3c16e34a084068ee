"""Commands from the control plane (`cmd` -> `cmd/result`): reprobe, restart-engine, benchmark.

`CommandRunner` takes `Command`s from the MQTT thread, runs them one at a time on its own
worker thread and replies with a `CommandResult`. A request_id it has already answered (a
QoS 1 redelivery) gets the same answer again from a small cache of recent results; a command
is never run twice. The actions are built here from what they act on, so the daemon only
wires them (see docs/protocol.md for the results).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from agent.engine_benchmark import BENCH_TOKENS, BenchmarkRun, measure_tokens_per_s
from agent.engines.base import LoadOptions
from agent.errors import AgentError
from agent.fleet.slots import Slot, SlotStore, load_slot
from agent.fleet.worker import QueueWorker
from agent.model_loading import EngineFactory
from agent.runtime import ModelRuntime
from agent.selection import variant_path
from models.errors import ModelsError
from models.manifest import Manifest
from models.protocol import Command, CommandResult

_LOGGER = logging.getLogger(__name__)

RECENT_RESULTS = 256  # answered request_ids kept for redeliveries
MAX_BENCH_TOKENS = 512

Action = Callable[[Mapping[str, object]], dict[str, object]]
Reply = Callable[[CommandResult], None]


class CommandFailed(AgentError):
    """A command could not be carried out; the message says why and what to do."""


class CommandRunner(QueueWorker[Command]):
    """Runs commands one at a time off the MQTT thread and answers each request_id once.

    `stop` drops the queued commands; the control plane may send them again.
    """

    def __init__(
        self, actions: Mapping[str, Action], reply: Reply, *, recent: int = RECENT_RESULTS
    ) -> None:
        super().__init__("commands")
        self.actions = dict(actions)
        self._reply = reply
        self._recent = recent
        self._answered: OrderedDict[str, CommandResult] = OrderedDict()
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, command: Command) -> None:
        """Called on the MQTT thread: queue the command, or answer a repeat from the cache."""
        with self._lock:
            cached = self._answered.get(command.request_id)
            if cached is None and command.request_id in self._pending:
                return  # a redelivery of the one being run: it is answered when it ends
            if cached is None:
                self._pending.add(command.request_id)
        if cached is not None:
            _LOGGER.info("command %s seen before; answering again", command.request_id)
            self._send(cached)
            return
        self._queue.put(command)

    def execute(self, command: Command) -> CommandResult:
        """Run one command now (blocking) and build its result; never raises."""
        action = self.actions.get(command.command)
        if action is None:
            known = ", ".join(sorted(self.actions))
            return CommandResult(
                request_id=command.request_id,
                ok=False,
                error=f"unknown command {command.command!r}; this agent runs: {known}",
            )
        try:
            result = action(command.args)
        except (AgentError, ModelsError, ValueError) as exc:
            _LOGGER.warning("command %s (%s) failed: %s", command.command, command.request_id, exc)
            return CommandResult(request_id=command.request_id, ok=False, error=str(exc))
        except Exception as exc:
            _LOGGER.exception("command %s (%s) crashed", command.command, command.request_id)
            error = f"{command.command} failed: {type(exc).__name__}: {exc}"
            return CommandResult(request_id=command.request_id, ok=False, error=error)
        return CommandResult(request_id=command.request_id, ok=True, result=result)

    def _run(self) -> None:
        while (command := self._queue.get()) is not None:
            _LOGGER.info("running command %s (%s)", command.command, command.request_id)
            result = self.execute(command)
            with self._lock:
                self._pending.discard(command.request_id)
                self._answered[command.request_id] = result
                while len(self._answered) > self._recent:
                    self._answered.popitem(last=False)
            self._send(result)

    def _send(self, result: CommandResult) -> None:
        try:
            self._reply(result)
        except Exception:  # a closed outbox at shutdown must not kill the worker
            _LOGGER.exception("could not queue the result of %s", result.request_id)


def reprobe_action(
    probe: Callable[[], dict[str, Any]], apply: Callable[[dict[str, Any]], str]
) -> Action:
    """`reprobe`: probe the hardware again; `apply` stores it and returns the new digest."""

    def reprobe(_args: Mapping[str, object]) -> dict[str, object]:
        profile = probe()
        digest = apply(profile)
        return {"device_class": str(profile.get("device_class", "")), "hardware_digest": digest}

    return reprobe


def _serving_slot(runtime: ModelRuntime, slots: SlotStore, busy: Callable[[], bool]) -> Slot:
    if busy():
        raise CommandFailed("a rollout is being applied; send the command again when it ends")
    slot = slots.active() if runtime.known is not None else None
    if slot is None:
        raise CommandFailed("no fleet model is active on this device; roll one out first")
    return slot


def restart_engine_action(
    runtime: ModelRuntime,
    slots: SlotStore,
    engine_factory: EngineFactory,
    *,
    busy: Callable[[], bool],
    on_change: Callable[[], None],
    load_options: Callable[[], LoadOptions] = LoadOptions,
) -> Action:
    """`restart-engine`: unload the active model, then load its slot again in a new engine."""

    def restart_engine(_args: Mapping[str, object]) -> dict[str, object]:
        slot = _serving_slot(runtime, slots, busy)
        runtime.unload()
        try:
            loaded = runtime.load_with(lambda: load_slot(slot, engine_factory, load_options()))
        except AgentError as exc:
            raise CommandFailed(f"reloading {slot.key} failed: {exc}") from exc
        finally:
            on_change()
        return {"model": loaded.ref, "load_seconds": round(loaded.load_seconds, 3)}

    return restart_engine


def _tokens(args: Mapping[str, object]) -> int:
    tokens = args.get("tokens", BENCH_TOKENS)
    if isinstance(tokens, int) and not isinstance(tokens, bool) and 0 < tokens <= MAX_BENCH_TOKENS:
        return tokens
    raise ValueError(f"args.tokens must be an integer from 1 to {MAX_BENCH_TOKENS}")


def benchmark_action(
    runtime: ModelRuntime,
    slots: SlotStore,
    engine_factory: EngineFactory,
    *,
    busy: Callable[[], bool],
) -> Action:
    """`benchmark`: time a short greedy run of the active model in a second engine instance."""

    def benchmark(args: Mapping[str, object]) -> dict[str, object]:
        tokens = _tokens(args)
        slot = _serving_slot(runtime, slots, busy)
        manifest = Manifest.load(slot.path)
        variant = manifest.variant(slot.variant)
        options = LoadOptions(context_length=manifest.context_length, device=slot.device)
        rate = measure_tokens_per_s(
            engine_factory(slot.engine),
            variant_path(slot.path, variant),
            options,
            BenchmarkRun(tokens=tokens),
        )
        return {
            "model": manifest.ref,
            "variant": variant.id,
            "engine": slot.engine,
            "tokens": tokens,
            "tokens_per_s": round(rate, 2),
        }

    return benchmark
