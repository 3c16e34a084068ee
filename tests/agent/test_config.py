"""What the agent's settings become when an engine loads."""

from __future__ import annotations

from pathlib import Path

from agent.config import load_settings


def test_load_options_carry_the_settings_an_engine_reads(tmp_path: Path) -> None:
    settings = load_settings(
        None, data_dir=tmp_path, threads=3, parallel=4, context_length=512, batch_invariant=False
    )
    options = settings.load_options()
    assert (options.threads, options.parallel, options.context_length) == (3, 4, 512)
    assert options.batch_invariant is False
    assert options.cache_dir == tmp_path / "cache"


def test_batched_answers_equal_solo_ones_unless_turned_off(tmp_path: Path) -> None:
    assert load_settings(None, data_dir=tmp_path).load_options().batch_invariant is True
