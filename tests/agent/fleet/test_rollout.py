"""The rollout executor on real files: signed fake models, the real artifact store, FakeEngine."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.engines.base import LoadOptions
from agent.engines.fake import FakeBehaviour
from agent.runtime import ModelRuntime, Readiness
from models.protocol import DesiredState
from tests.agent.fleet.nodes import Rig
from tests.e2e.fakes import fake_engines


def test_rollout_downloads_verifies_checks_and_switches(rig: Rig) -> None:
    assert rig.apply(1, rig.publish("1.0"))
    kinds = rig.kinds(1)
    assert [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k] == [
        "accepted",
        "verifying",
        "downloading",
        "verifying",
        "loading",
        "health_check",
        "active",
    ]
    progress = [e for e in rig.events if e.kind == "downloading"]
    assert progress[0].bytes_done == 0 and progress[-1].bytes_done == progress[-1].bytes_total
    active = rig.executor.deps.slots.active()
    assert active is not None and active.version == "1.0"
    assert rig.serving() == "tiny:1.0"
    assert rig.events[-1].health and rig.events[-1].health["tokens"] > 0
    assert rig.executor.applied_version == 1


def test_failed_health_check_keeps_the_previous_model(rig: Rig) -> None:
    assert rig.apply(1, rig.publish("1.0"))
    assert not rig.apply(2, rig.publish("2.0", healthy=False))
    last = rig.events[-1]
    assert last.kind == "rolled_back" and "health check failed" in last.detail
    assert "tokens/s" in last.detail and "kept tiny:1.0" in last.detail
    assert rig.serving() == "tiny:1.0"
    slot = rig.executor.deps.slots.active()
    assert slot is not None and slot.version == "1.0"


def test_tampered_artifact_is_refused(rig: Rig) -> None:
    desired = rig.publish("1.0")
    (rig.registry / "tiny" / "1.0" / "model.gguf").write_bytes(b"x" * 4096)
    assert not rig.apply(1, desired)
    assert rig.events[-1].kind == "failed"
    assert "sha256 mismatch" in rig.events[-1].detail
    assert rig.serving() is None


def test_untrusted_signature_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    rig = Rig(tmp_path, key, trusted_keys=[Ed25519PrivateKey.generate().public_key()])
    assert not rig.apply(1, rig.publish("1.0"))
    assert rig.events[-1].kind == "failed"
    assert "manifest rejected" in rig.events[-1].detail


def test_model_too_big_for_memory_is_refused_before_download(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    rig = Rig(tmp_path, key, memory_available=lambda: 3 << 30)
    assert not rig.apply(1, rig.publish("1.0", memory_bytes=5 << 30))
    # 5 GiB x 1.15 + 256 MiB, as selection counts it
    assert "requires more memory (6.0 GiB) than is available (3.0 GiB)" in rig.events[-1].detail
    assert "downloading" not in rig.kinds(1)


def test_rollback_to_previous_needs_no_download(rig: Rig) -> None:
    v1 = rig.publish("1.0")
    assert rig.apply(1, v1)
    assert rig.apply(2, rig.publish("2.0"))
    assert rig.serving() == "tiny:2.0"
    (rig.registry / "tiny" / "1.0" / "model.gguf").unlink()  # proves nothing is downloaded
    assert rig.apply(3, v1)
    assert rig.serving() == "tiny:1.0"
    assert "downloading" not in rig.kinds(3)


def test_repeated_desired_of_the_active_model_reports_active(rig: Rig) -> None:
    v1 = rig.publish("1.0")
    assert rig.apply(1, v1)
    assert rig.apply(2, v1)
    assert rig.kinds(2) == ["accepted", "active"]


def test_stale_and_repeated_versions_are_ignored(rig: Rig) -> None:
    v1 = rig.publish("1.0")
    rig.executor.start()
    try:
        rig.executor.submit(DesiredState(version=5, models=[v1]))
        deadline = time.monotonic() + 10
        while rig.executor.applied_version < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        rig.executor.stop()
    assert rig.executor.applied_version == 5
    again = rig.make_executor()  # the applied version survives a restart
    assert again.applied_version == 5
    again.submit(DesiredState(version=5, models=[rig.publish("2.0")]))
    again.submit(DesiredState(version=4, models=[rig.publish("2.0")]))
    assert again._queue.empty()


def test_restart_loads_the_committed_slot(rig: Rig) -> None:
    assert rig.apply(1, rig.publish("1.0"))
    assert rig.apply(2, rig.publish("2.0"))
    rig.runtime = ModelRuntime()
    restarted = rig.make_executor()
    slot = restarted.restore()
    assert slot is not None and slot.version == "2.0"
    assert rig.serving() == "tiny:2.0"


def test_restart_falls_back_to_previous_when_active_slot_is_broken(rig: Rig) -> None:
    assert rig.apply(1, rig.publish("1.0"))
    assert rig.apply(2, rig.publish("2.0"))
    active = rig.executor.deps.slots.active()
    assert active is not None
    (active.path / "manifest.json").write_text("{broken")
    rig.runtime = ModelRuntime()
    restored = rig.make_executor().restore()
    assert restored is not None and restored.version == "1.0"


def test_engine_that_fails_to_load_reports_failed(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    rig = Rig(tmp_path, key, engines=fake_engines(FakeBehaviour(fail_load=True)))
    assert not rig.apply(1, rig.publish("1.0"))
    assert rig.events[-1].kind == "failed"
    assert "refused to load" in rig.events[-1].detail


def test_empty_desired_unloads_the_rolled_out_model_and_serves_nothing(rig: Rig) -> None:
    first = rig.publish("1.0")
    assert rig.apply(1, first)  # the device's first model: a revert has nothing to go back to
    assert rig.executor.apply(DesiredState(version=2, models=[]))
    assert rig.serving() is None and rig.runtime.known is None
    assert rig.runtime.readiness is Readiness.EMPTY
    assert rig.executor.deps.slots.active() is None
    last = rig.events[-1]
    assert (last.kind, last.desired_version, last.rollout_id) == ("rolled_back", 2, "r1")
    assert last.model == "tiny:1.0" and "unloaded tiny:1.0" in last.detail
    rig.runtime = ModelRuntime()  # a restart keeps serving nothing
    restarted = rig.make_executor()
    assert restarted.restore() is None and rig.serving() is None
    assert restarted.applied_version == 2
    (rig.registry / "tiny" / "1.0" / "model.gguf").unlink()  # the slot is kept: no download
    assert restarted.apply(DesiredState(version=3, models=[first]))
    assert rig.serving() == "tiny:1.0" and "downloading" not in rig.kinds(3)


def test_empty_desired_after_a_failed_first_rollout_reports_nothing_loaded(rig: Rig) -> None:
    assert not rig.apply(1, rig.publish("1.0", healthy=False))
    assert rig.executor.apply(DesiredState(version=2, models=[]))
    last = rig.events[-1]
    assert (last.kind, last.rollout_id, last.model) == ("rolled_back", "r1", "tiny:1.0")
    assert "nothing was loaded" in last.detail
    assert rig.serving() is None


def test_empty_desired_on_a_fresh_device_changes_nothing(rig: Rig) -> None:
    assert rig.executor.apply(DesiredState(version=1, models=[]))
    assert rig.events == [] and rig.serving() is None
    assert rig.executor.applied_version == 1


def test_quality_probe_must_match_or_the_previous_model_stays(rig: Rig) -> None:
    from agent.engines.base import SamplingParams, TokenChunk
    from models.protocol import ProbePrompt

    assert rig.apply(1, rig.publish("1.0"))
    loaded = rig.runtime.active
    assert loaded is not None
    params = SamplingParams(max_tokens=8, temperature=0.0, seed=0)
    answer = "".join(
        i.text
        for i in loaded.engine.generate("capital of France?", params)
        if isinstance(i, TokenChunk)
    )
    good = ProbePrompt(prompt="capital of France?", expect=answer.split()[0], max_tokens=8)
    model = rig.publish("2.0").model_copy(update={"probe": [good]})
    assert rig.apply(2, model) and rig.serving() == "tiny:2.0"
    bad = ProbePrompt(prompt="capital of France?", expect="Paris-not-here", max_tokens=8)
    assert not rig.apply(3, rig.publish("3.0").model_copy(update={"probe": [good, bad]}))
    last = rig.events[-1]
    assert last.kind == "rolled_back" and "quality probe" in last.detail
    assert "kept tiny:2.0" in last.detail and rig.serving() == "tiny:2.0"


def test_loads_use_the_settings_and_the_parallel_knob_of_now(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    seen: list[tuple[int, int | None, bool, str]] = []
    engines = fake_engines()

    def recording(name: str) -> object:
        engine = engines(name)
        load = engine.load

        def load_and_record(path: Path, options: object) -> None:
            assert isinstance(options, LoadOptions)
            seen.append(
                (options.parallel, options.threads, options.batch_invariant, options.device)
            )
            load(path, options)  # type: ignore[arg-type]

        engine.load = load_and_record  # type: ignore[method-assign,assignment]
        return engine

    parallel = [3]
    settings = LoadOptions(threads=3, batch_invariant=False, device="the slot's, not this")
    rig = Rig(
        tmp_path,
        key,
        engines=recording,
        load_options=lambda: replace(settings, parallel=parallel[0]),
    )
    assert rig.apply(1, rig.publish("1.0"))
    parallel[0] = 6  # a remote setting changed: the next load takes it
    assert rig.apply(2, rig.publish("2.0"))
    assert seen == [(3, 3, False, "CPU"), (6, 3, False, "CPU")]
