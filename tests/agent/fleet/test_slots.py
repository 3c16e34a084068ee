"""Model slots: install, atomic switch, previous kept, pruning."""

from __future__ import annotations

import os
from pathlib import Path

from agent.fleet.slots import Slot, SlotStore


def install(store: SlotStore, version: str, content: str = "weights") -> Slot:
    staging = store.staging_dir("tiny", version, "gguf-q4_0")
    (staging / "model.gguf").write_text(content)
    store.install(staging, "tiny", version, "gguf-q4_0", "llamacpp")
    slot = store.get("tiny", version, "gguf-q4_0")
    assert slot is not None
    return slot


def test_fresh_store_has_no_active_slot(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    assert store.active() is None and store.previous() is None


def test_activate_switches_pointer_and_keeps_previous(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    first = install(store, "1")
    store.activate(first)
    second = install(store, "2")
    assert store.active() == first  # staged, not yet committed
    store.activate(second)
    assert store.active() == second
    assert store.previous() == first
    assert (tmp_path / "slots" / "active").is_symlink()
    assert os.readlink(tmp_path / "slots" / "active") == second.key


def test_prune_keeps_active_and_previous_only(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    for version in ("1", "2", "3"):
        slot = install(store, version)
        store.activate(slot)
    leftover = store.staging_dir("tiny", "4", "gguf-q4_0")
    removed = store.prune()
    assert "tiny-1-gguf-q4_0" in removed and leftover.name in removed
    assert store.get("tiny", "2", "gguf-q4_0") is not None
    assert store.get("tiny", "3", "gguf-q4_0") is not None
    assert store.get("tiny", "1", "gguf-q4_0") is None


def test_reinstalling_the_active_slot_keeps_it(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    slot = install(store, "1", "old")
    store.activate(slot)
    install(store, "1", "new")
    assert (slot.path / "model.gguf").read_text() == "old"
    assert store.find("tiny", "1") == slot


def test_a_half_written_pointer_swap_leaves_the_old_pointer(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    slot = install(store, "1")
    store.activate(slot)
    # A crash between creating the temporary link and os.replace leaves a stray temp link.
    os.symlink("tiny-9-gguf-q4_0", tmp_path / "slots" / ".active-dead")
    reopened = SlotStore(tmp_path / "slots")
    assert reopened.active() == slot


def test_deactivate_leaves_no_active_slot_and_keeps_it_as_previous(tmp_path: Path) -> None:
    store = SlotStore(tmp_path / "slots")
    assert store.deactivate() is None and not store.has_active()
    slot = install(store, "1")
    store.activate(slot)
    assert store.has_active()
    assert store.deactivate() == slot
    reopened = SlotStore(tmp_path / "slots")
    assert reopened.active() is None and not reopened.has_active()
    assert reopened.previous() == slot
    assert reopened.prune() == [] and reopened.find("tiny", "1") == slot
    reopened.activate(slot)
    assert reopened.active() == slot
