"""llama.cpp without AMX repacking where its AMX kernels fault; untouched elsewhere."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from models import llamacpp_amx


def test_amx_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    with_amx = tmp_path / "amx"
    with_amx.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n")
    without = tmp_path / "plain"
    without.write_text("flags\t\t: fpu avx2\n")
    assert llamacpp_amx.advertises_amx(with_amx)
    assert not llamacpp_amx.advertises_amx(without)
    assert not llamacpp_amx.advertises_amx(tmp_path / "missing")


@pytest.mark.parametrize("faults", [True, False])
def test_models_load_without_extra_buffers_only_where_amx_faults(
    monkeypatch: pytest.MonkeyPatch, faults: bool
) -> None:
    monkeypatch.setattr(llamacpp_amx, "amx_faults", lambda gguf: faults)

    def default_params() -> SimpleNamespace:
        return SimpleNamespace(use_extra_bufts=True, n_gpu_layers=0)

    lib = SimpleNamespace(llama_model_default_params=default_params)
    llamacpp_amx.avoid_faulting_amx(lib, Path("m.gguf"))
    llamacpp_amx.avoid_faulting_amx(lib, Path("m.gguf"))  # a second load wraps nothing more
    params = lib.llama_model_default_params()
    assert params.use_extra_bufts is (not faults) and params.n_gpu_layers == 0


def test_each_model_file_is_probed_until_one_faults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Measured here: an f32 GGUF never reaches the AMX kernels, a Q4_0 one faults.
    monkeypatch.setattr(llamacpp_amx, "_probed", {})
    monkeypatch.setattr(llamacpp_amx, "advertises_amx", lambda: True)
    monkeypatch.setattr(sys, "platform", "linux")
    probed: list[str] = []

    def run(cmd: list[str], **_kw: object) -> SimpleNamespace:
        probed.append(Path(cmd[-1]).name)
        return SimpleNamespace(returncode=-signal.SIGILL if "q4" in cmd[-1] else 0)

    monkeypatch.setattr(subprocess, "run", run)
    f32, q4 = tmp_path / "model-f32.gguf", tmp_path / "model-q4_0.gguf"
    assert not llamacpp_amx.amx_faults(f32)
    assert llamacpp_amx.amx_faults(q4)
    assert llamacpp_amx.amx_faults(q4) and not llamacpp_amx.amx_faults(f32)
    assert probed == ["model-f32.gguf", "model-q4_0.gguf"]  # once a file
