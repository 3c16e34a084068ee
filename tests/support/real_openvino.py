"""SmolLM2-135M-Instruct as a signed OpenVINO INT8 model directory, built once and cached.

`edgefleet-models build`'s own pipeline (`build_targets`, target `openvino-int8`) turns the
cached Hugging Face checkpoint (`models.real_models.hf_checkpoint`) into a model directory
under the model cache, published with a rename under a file lock like the other real models.
The first build takes about 1.5 minutes on 2 cores (plus about a minute for the checkpoint if
that is not cached yet); later calls return the cached directory at once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from models.manifest import MANIFEST_FILE
from models.real_models import CHECKPOINT_VERSION, SMOLLM2, cache_dir, hf_checkpoint

# Bump when the build's output for the same checkpoint changes: older builds are not reused.
OPENVINO_BUILD_VERSION = 1
SMOLLM2_OPENVINO_NAME = "smollm2-135m-instruct"


def smollm2_openvino() -> Path:
    """The signed SmolLM2 model directory with one variant, `openvino-int8` (read-only)."""
    from models.build.pipeline import build_targets
    from models.keys import generate_key

    checkpoint = hf_checkpoint(SMOLLM2)
    root = cache_dir()
    target = root / f"smollm2-openvino-{CHECKPOINT_VERSION}.{OPENVINO_BUILD_VERSION}"
    with (root / ".smollm2-openvino.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / MANIFEST_FILE).is_file():
            return target
        with tempfile.TemporaryDirectory(dir=root, prefix=".ov-") as tmp:
            staging = Path(tmp) / "model"
            build_targets(
                checkpoint,
                staging,
                ("openvino-int8",),
                generate_key(),
                name=SMOLLM2_OPENVINO_NAME,
                progress=False,
            )
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
    return target
