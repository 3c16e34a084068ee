"""`build_targets`: a Hugging Face checkpoint -> GGUF / OpenVINO / ONNX variants, signed."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from models.build.checkpoint import CheckpointInfo, read_checkpoint
from models.build.errors import BuildError
from models.build.output import build_output, check_target_dependencies
from models.build.targets import (
    TARGET_OUTPUTS,
    TARGETS,
    BuildContext,
    Q4Type,
    VariantDraft,
    resolve_targets,
)
from models.manifest import Manifest, TokenizerInfo, Variant

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_LOGGER = logging.getLogger(__name__)


def count_parameters(hf_dir: Path) -> int:
    """Number of weights in the checkpoint's safetensors files (headers only, no loading)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                count = 1
                for dim in f.get_slice(key).get_shape():
                    count *= int(dim)
                total += count
    return total


def kv_cache_bytes(info: CheckpointInfo, bytes_per_value: int) -> int:
    """Keys and values of every layer at the default context: 2 * L * ctx * kv_heads * head_dim."""
    return 2 * info.layers * info.context_length * info.kv_heads * info.head_dim * bytes_per_value


def default_name(hf_dir: Path) -> str:
    """A manifest-safe name from the checkpoint directory name."""
    name = re.sub(r"[^a-z0-9._-]+", "-", hf_dir.resolve().name.lower()).strip("-._")
    return name or "model"


def default_version(hf_dir: Path) -> str:
    """A version derived from the weights, so a changed checkpoint never reuses a version."""
    digest = hashlib.sha256()
    for file in sorted(hf_dir.glob("*.safetensors")):
        with file.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"sha-{digest.hexdigest()[:12]}"


def _variant(
    out_dir: Path, draft: VariantDraft, info: CheckpointInfo, shared: list[str]
) -> Variant:
    from models.signing import file_entry

    paths = list(dict.fromkeys([*draft.files, *shared]))
    return Variant(
        id=draft.id,
        format=draft.format,
        precision=draft.precision,
        engines=draft.engines,
        files=[file_entry(out_dir, p) for p in paths],
        memory_bytes=draft.weight_bytes + kv_cache_bytes(info, draft.kv_bytes_per_value),
        built_on_device=draft.built_on_device,
    )


@dataclass(frozen=True)
class BuildResult:
    """The signed manifest, the targets that failed (with why) and each target's seconds."""

    manifest: Manifest
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _tokenizer_info(info: CheckpointInfo) -> TokenizerInfo:
    bos, eos = info.special_token("bos_token"), info.special_token("eos_token")
    stops = info.stop_tokens()
    return TokenizerInfo(
        file="tokenizer.json",
        bos_token=bos,
        eos_token=eos,
        bos_token_id=info.token_id(bos),
        eos_token_id=info.token_id(eos),
        stop_tokens=[t for t, _ in stops],
        stop_token_ids=[i for _, i in stops],
    )


def _remove_outputs(out_dir: Path, target: str) -> None:
    for rel in TARGET_OUTPUTS.get(target, ()):
        path = out_dir / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def build_targets(
    hf_dir: Path,
    out_dir: Path,
    targets: Sequence[str],
    key: Ed25519PrivateKey,
    name: str | None = None,
    version: str | None = None,
    *,
    progress: bool = True,
    q4_type: Q4Type | None = None,
    keep_going: bool = False,
    verbose: bool = False,
) -> BuildResult:
    """Build each target into `out_dir`, then sign what built; failures raise unless keep_going."""
    from tqdm import tqdm

    from models.signing import write_signed_manifest

    wanted = resolve_targets(list(targets))
    info = read_checkpoint(hf_dir)
    check_target_dependencies(wanted)
    name = name or default_name(hf_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("manifest.json", "manifest.sig"):  # a half-rebuilt dir must not look complete
        (out_dir / stale).unlink(missing_ok=True)
    if any(t.startswith("gguf") for t in wanted) and (out_dir / "gguf").is_dir():
        shutil.rmtree(out_dir / "gguf")
    shutil.copy2(hf_dir / "tokenizer.json", out_dir / "tokenizer.json")

    drafts: list[VariantDraft] = []
    failed: dict[str, str] = {}
    seconds: dict[str, float] = {}
    with build_output(out_dir, verbose) as (work_dir, terminal):
        ctx = BuildContext(info, out_dir, name, work_dir, q4_type, verbose)
        bar = tqdm(
            total=len(wanted),
            desc=f"build {name}",
            unit="target",
            file=terminal,
            disable=not progress,
            dynamic_ncols=True,
        )
        with bar:
            for target in wanted:
                bar.set_postfix_str(target)
                started = time.monotonic()
                try:
                    drafts.extend(TARGETS[target](ctx))
                except BuildError as exc:
                    _remove_outputs(out_dir, target)
                    if not keep_going:
                        raise BuildError(f"target {target} failed: {exc.reason}") from exc
                    failed[target] = exc.reason
                    terminal.write(f"target {target} failed: {exc.reason}\n")
                seconds[target] = time.monotonic() - started
                _LOGGER.info("target %s done in %.1f s", target, seconds[target])
                bar.update(1)
    if not drafts:
        raise BuildError("no target built: " + "; ".join(f"{t}: {r}" for t, r in failed.items()))

    manifest = Manifest(
        name=name,
        version=version or default_version(hf_dir),
        architecture=str(info.config.get("model_type", "llama")),
        context_length=info.context_length,
        parameters=count_parameters(hf_dir),
        tokenizer=_tokenizer_info(info),
        chat_template=info.chat_template,
        variants=[_variant(out_dir, d, info, ["tokenizer.json"]) for d in drafts],
    )
    write_signed_manifest(out_dir, manifest, key)
    _LOGGER.info("built %s with %d variants in %s", manifest.ref, len(drafts), out_dir)
    return BuildResult(manifest, failed, seconds)
