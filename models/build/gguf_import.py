"""A `.gguf` file -> a signed model directory, as it is: its metadata becomes the manifest.

No conversion: the file is copied (or hard-linked) into `gguf/model-<precision>.gguf`, and the
manifest is filled from the GGUF's own key/value metadata (models.build.gguf_info).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from models.build.errors import BuildError
from models.build.gguf_info import GGUFInfo, read_gguf
from models.manifest import Manifest, TokenizerInfo, Variant

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_LOGGER = logging.getLogger(__name__)


def _name_for(info: GGUFInfo) -> str:
    """The file's stem without its quantization suffix, as a manifest name."""
    # The file name is what the user chose; general.name is often a training run's name.
    stem = info.path.name.lower().removesuffix(".gguf")
    stem = re.sub(rf"[._-]{re.escape(info.precision)}$", "", stem)
    name = re.sub(r"[^a-z0-9._-]+", "-", stem).strip("-._")
    return name or "model"


def _place(src: Path, dst: Path, hardlink: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    if hardlink:
        try:
            os.link(src, dst)
            return
        except OSError as exc:  # another filesystem, or links not allowed: copy instead
            _LOGGER.info("cannot hard-link %s (%s); copying", src, exc)
    shutil.copy2(src, dst)


def import_gguf(
    gguf_file: Path,
    out_dir: Path,
    key: Ed25519PrivateKey,
    name: str | None = None,
    version: str | None = None,
    hardlink: bool = False,
) -> Manifest:
    """Make `out_dir` a signed model directory holding `gguf_file` as its one variant."""
    from models.signing import file_entry, write_signed_manifest

    if not gguf_file.is_file():
        raise BuildError(f"{gguf_file} does not exist or is not a file")
    info = read_gguf(gguf_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("manifest.json", "manifest.sig"):  # a half-rebuilt dir must not look complete
        (out_dir / stale).unlink(missing_ok=True)
    rel = f"gguf/model-{info.precision}.gguf"
    _place(gguf_file, out_dir / rel, hardlink)
    entry = file_entry(out_dir, rel)
    variant = Variant(
        id=f"gguf-{info.precision}",
        format="gguf",
        precision=info.precision,
        engines=["llamacpp"],
        files=[entry],
        memory_bytes=entry.size + info.kv_cache_bytes(),
    )
    manifest = Manifest(
        name=name or _name_for(info),
        version=version or f"sha-{entry.sha256[:12]}",
        architecture=info.architecture,
        context_length=info.context_length,
        parameters=info.parameters,
        # The vocab lives inside the GGUF; llama.cpp tokenizes with it.
        tokenizer=TokenizerInfo(
            file=rel,
            bos_token=info.bos[0] if info.bos else None,
            bos_token_id=info.bos[1] if info.bos else None,
            eos_token=info.eos[0] if info.eos else None,
            eos_token_id=info.eos[1] if info.eos else None,
            stop_tokens=[t for t, _ in info.stop],
            stop_token_ids=[i for _, i in info.stop],
        ),
        chat_template=info.chat_template,
        variants=[variant],
    )
    write_signed_manifest(out_dir, manifest, key)
    _LOGGER.info(
        "imported %s as %s (%s) into %s", gguf_file.name, manifest.ref, variant.id, out_dir
    )
    return manifest
