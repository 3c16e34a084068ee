"""ModelRuntime: loading, atomic swaps, keep_alive, fair queueing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.engines.base import Completion, LoadOptions, SamplingParams, TokenChunk
from agent.engines.fake import FakeBehaviour, FakeEngine, fake_model
from agent.errors import ContextOverflow, ModelLoadError
from agent.generation import Generation, start_worker
from agent.keepalive import FOREVER, parse_keep_alive
from agent.model_loading import LoadedModel, open_model
from agent.runtime import ModelRuntime, QueueFull, Readiness
from hwprobe.profile import HardwareProfile
from tests.support.polling import wait_until


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("30", 30.0), (0, 0.0), (12.5, 12.5)],
)
def test_keep_alive_durations(value: str | float, seconds: float) -> None:
    assert parse_keep_alive(value) == seconds


def test_negative_keep_alive_means_forever_and_garbage_is_refused() -> None:
    assert parse_keep_alive(-1) == FOREVER and parse_keep_alive("-1") == FOREVER
    with pytest.raises(ValueError, match="not a duration"):
        parse_keep_alive("soon")


def prompt(text: str, max_tokens: int = 3) -> object:
    return lambda _model: (text, SamplingParams(max_tokens=max_tokens))


def test_activate_swaps_and_unloads_the_old_model_after_its_requests(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = ModelRuntime()
        old = runtime.load_with(lambda: fake_model(tmp_path, FakeBehaviour(token_delay_s=0.01)))
        running = await runtime.generate(prompt("a b", 20))  # type: ignore[arg-type]
        new = fake_model(tmp_path, name="new")
        assert runtime.activate(new) is old
        assert runtime.active is new
        assert isinstance(old.engine, FakeEngine) and old.engine.loaded_path is not None
        assert len((await running.text()).split()) == 20  # the old model finished its request
        wait_until(lambda: old.engine.loaded_path is None)  # type: ignore[attr-defined]
        assert new.engine.loaded_path is not None  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_idle_model_unloads_after_keep_alive_and_reloads(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = ModelRuntime(keep_alive=0.05)
        first = runtime.load_with(lambda: fake_model(tmp_path))
        await (await runtime.generate(prompt("x"))).text()  # type: ignore[arg-type]
        wait_until(lambda: runtime.readiness is Readiness.IDLE)
        assert first.engine.loaded_path is None  # type: ignore[attr-defined]
        reply = await (await runtime.generate(prompt("x"), keep_alive=FOREVER)).text()  # type: ignore[arg-type]
        assert reply and runtime.readiness is Readiness.READY
        assert runtime.active is not first and runtime.expires_at is None

    asyncio.run(scenario())


def test_queue_is_first_come_first_served_and_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = ModelRuntime(max_waiting=2)
        runtime.load_with(lambda: fake_model(tmp_path, FakeBehaviour(token_delay_s=0.005)))
        finished: list[str] = []

        async def ask(name: str) -> None:
            generation = await runtime.generate(prompt(name, 10))  # type: ignore[arg-type]
            await generation.text()
            finished.append(name)

        tasks = [asyncio.create_task(ask("a"))]
        await asyncio.sleep(0.02)
        tasks += [asyncio.create_task(ask(n)) for n in "bc"]
        await asyncio.sleep(0.01)
        assert runtime.waiting == 2
        with pytest.raises(QueueFull):
            await runtime.generate(prompt("d"))  # type: ignore[arg-type]
        await asyncio.gather(*tasks)
        assert finished == ["a", "b", "c"] and runtime.waiting == 0

    asyncio.run(scenario())


def test_context_overflow_frees_the_slot(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = ModelRuntime()
        runtime.load_with(lambda: fake_model(tmp_path, FakeBehaviour(context_length=8)))
        with pytest.raises(ContextOverflow, match="context is 8 tokens"):
            await runtime.generate(prompt("one two three four five", 10))  # type: ignore[arg-type]
        assert await (await runtime.generate(prompt("ok", 2))).text()  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_engine_failure_reaches_the_reader(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = ModelRuntime()
        runtime.load_with(lambda: fake_model(tmp_path, FakeBehaviour(fail_after_tokens=2)))
        generation = await runtime.generate(prompt("x", 5))  # type: ignore[arg-type]
        with pytest.raises(Exception, match="injected failure"):
            await generation.text()
        assert runtime.running == 0

    asyncio.run(scenario())


def test_load_failure_is_reported_and_leaves_the_runtime_empty(tmp_path: Path) -> None:
    runtime = ModelRuntime()
    with pytest.raises(ModelLoadError):
        runtime.load_with(lambda: fake_model(tmp_path, FakeBehaviour(fail_load=True)))
    assert runtime.readiness is Readiness.EMPTY and runtime.load_error


def test_open_model_selects_a_variant_from_the_manifest(tiny_model_dir: Path) -> None:
    made: list[str] = []

    def factory(name: str) -> FakeEngine:
        made.append(name)
        return FakeEngine()

    profile = {
        "device_class": "cpu-x86",
        "engines": ["openvino", "llamacpp"],
        "memory": {"available_bytes": 8 << 30},
    }
    loaded = open_model(
        tiny_model_dir,
        profile=HardwareProfile.model_validate(profile),
        installed={"openvino": "1", "llamacpp": "1"},
        engine_factory=factory,
    )
    assert made == ["openvino"] and loaded.engine_name == "openvino"
    assert loaded.manifest is not None and loaded.variant_id.startswith("openvino")
    assert "openvino" in loaded.explanation and loaded.selection is not None


def test_open_model_serves_a_bare_gguf_with_chatml(tmp_path: Path) -> None:
    gguf = tmp_path / "My-Model.gguf"
    gguf.write_bytes(b"GGUF")
    loaded = open_model(
        gguf,
        profile=None,
        installed={},
        engine_factory=lambda name: FakeEngine(),
        options=LoadOptions(context_length=64),
    )
    assert isinstance(loaded, LoadedModel) and loaded.manifest is None
    assert loaded.name == "my-model" and "<|im_start|>" in loaded.chat_template


def test_open_model_refuses_anything_else(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="neither a model directory"):
        open_model(tmp_path, profile=None, installed={}, engine_factory=lambda n: FakeEngine())


class GatedEngine(FakeEngine):
    """One token, then (once the gate opens) two more and the Completion at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.load(Path("."), LoadOptions())

    def generate(
        self, prompt: str, params: SamplingParams, cancel: threading.Event | None = None
    ) -> Iterator[TokenChunk | Completion]:
        yield TokenChunk(text="a", token_id=1)
        self.gate.wait(10)
        yield TokenChunk(text=" b", token_id=2)
        yield TokenChunk(text=" c", token_id=3)
        yield Completion("length", prompt_tokens=1, completion_tokens=3)


def _read_batches(engine: GatedEngine, interval: float) -> list[list[str]]:
    async def scenario() -> list[list[str]]:
        done = threading.Event()
        params = SamplingParams(max_tokens=3)
        generation = Generation(None, params, 1, on_done=done.set, batch_interval_s=interval)
        start_worker(generation, engine, "p")
        batches: list[list[str]] = []

        async def read() -> None:
            async for chunks in generation:
                batches.append([c.text for c in chunks])
                engine.gate.set()

        await asyncio.wait_for(read(), timeout=30)
        assert done.is_set() and generation.completion is not None
        assert generation.completion.completion_tokens == 3
        return batches

    return asyncio.run(scenario())


def test_first_token_comes_at_once_and_the_rest_share_a_batch_until_the_end() -> None:
    # An interval far longer than the test: only the end of the generation can wake the
    # reader for the second batch, and the tokens that came meanwhile arrive together.
    assert _read_batches(GatedEngine(), interval=600) == [["a"], [" b", " c"]]


def test_without_an_interval_every_token_is_read_as_it_comes() -> None:
    batches = _read_batches(GatedEngine(), interval=0)
    assert batches[0] == ["a"]
    assert [text for batch in batches for text in batch] == ["a", " b", " c"]
