"""Agent releases: the agent's own code as a signed artifact, rolled out like a model.

A release directory holds `release.json` (name, version, the files with sha256 and size),
`release.sig` (Ed25519 over the canonical release.json, the same keys and signature shape
as model manifests) and one wheel: `edgefleet_agent-{version}-py3-none-any.whl`, the pure
Python packages `agent`, `models` and `hwprobe`. The wheel carries no dependencies: a
device's base environment (its venv) provides them, and a release that needs a newer
dependency ships that wheel in the same directory. On the device a release is installed by
unpacking its wheels into `versions/{version}/`, which goes first on the agent's PYTHONPATH
(docs/agent-update.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, Field, ValidationError

from models.errors import VerificationError
from models.files import atomic_write_bytes, hash_file, safe_relative_path
from models.keys import key_id, public_key_b64
from models.manifest import FileEntry
from models.signing import ManifestSignature

RELEASE_FILE = "release.json"
RELEASE_SIGNATURE_FILE = "release.sig"
RELEASE_NAME = "edgefleet-agent"
PACKAGES = ("agent", "models", "hwprobe")
VERSION_FILE = "agent/__init__.py"


class AgentReleaseManifest(BaseModel):
    """`release.json`: one agent version and the files that make it."""

    name: str = RELEASE_NAME
    version: str = Field(min_length=1, max_length=100, pattern=r"^[0-9A-Za-z.+_-]+$")
    python_requires: str = ">=3.10"
    files: list[FileEntry] = Field(min_length=1, max_length=64)

    def canonical_bytes(self) -> bytes:
        """What the signature covers: sorted-key compact JSON."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()


def wheel_name(version: str) -> str:
    """The release's wheel file name."""
    return f"edgefleet_agent-{version.replace('-', '_')}-py3-none-any.whl"


def build_release(
    source: Path,
    out_dir: Path,
    version: str,
    key: Ed25519PrivateKey,
    *,
    overrides: Mapping[str, str] | None = None,
) -> AgentReleaseManifest:
    """Build and sign a release of the tree at `source` as `version` into `out_dir`.

    `overrides` replaces files by path inside the wheel (tests use it to build a broken
    release); the version is written into agent/__init__.py.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / wheel_name(version)
    dist = f"edgefleet_agent-{version.replace('-', '_')}.dist-info"
    records: list[str] = []
    replaced = dict(overrides or {})
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:

        def put(name: str, data: bytes) -> None:
            zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{name},sha256={digest.decode()},{len(data)}")

        for package in PACKAGES:
            for path in sorted((source / package).rglob("*")):
                if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
                    continue
                name = path.relative_to(source).as_posix()
                data = replaced.pop(name).encode() if name in replaced else path.read_bytes()
                if name == VERSION_FILE:
                    data = _with_version(data.decode(), version).encode()
                put(name, data)
        for name, text in sorted(replaced.items()):
            put(name, text.encode())
        put(
            f"{dist}/METADATA",
            f"Metadata-Version: 2.1\nName: edgefleet-agent\nVersion: {version}\n".encode(),
        )
        put(
            f"{dist}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: edgefleet\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}/RECORD", "\n".join([*records, f"{dist}/RECORD,,"]) + "\n")
    sha, size = hash_file(wheel)
    manifest = AgentReleaseManifest(
        version=version, files=[FileEntry(path=wheel.name, sha256=sha, size=size)]
    )
    signature = ManifestSignature(
        key_id=key_id(key),
        public_key=public_key_b64(key),
        signature=base64.b64encode(key.sign(manifest.canonical_bytes())).decode(),
    )
    atomic_write_bytes(out_dir / RELEASE_FILE, manifest.model_dump_json(indent=2).encode())
    atomic_write_bytes(out_dir / RELEASE_SIGNATURE_FILE, signature.model_dump_json().encode())
    return manifest


def _with_version(text: str, version: str) -> str:
    lines = [
        f'__version__ = "{version}"' if ln.startswith("__version__") else ln
        for ln in text.splitlines()
    ]
    return "\n".join(lines) + "\n"


def verify_release(
    release_bytes: bytes, signature_bytes: bytes, trusted: Sequence[Ed25519PublicKey]
) -> AgentReleaseManifest:
    """The release manifest when a trusted key signed it; VerificationError otherwise."""
    try:
        manifest = AgentReleaseManifest.model_validate_json(release_bytes)
        signature = ManifestSignature.model_validate_json(signature_bytes)
        raw = base64.b64decode(signature.signature, validate=True)
    except (ValidationError, ValueError) as exc:
        raise VerificationError(f"agent release is malformed: {exc}") from exc
    for key in trusted:
        try:
            key.verify(raw, manifest.canonical_bytes())
        except InvalidSignature:
            continue
        for entry in manifest.files:
            safe_relative_path(entry.path)
        return manifest
    raise VerificationError(
        f"agent release {manifest.version} is not signed by a trusted key "
        f"(signed by {signature.key_id}); import it with the fleet's signing key"
    )


def verify_release_dir(
    release_dir: Path, trusted: Sequence[Ed25519PublicKey]
) -> AgentReleaseManifest:
    """Check a release directory's signature and every file's size and sha256."""
    manifest = verify_release(
        (release_dir / RELEASE_FILE).read_bytes(),
        (release_dir / RELEASE_SIGNATURE_FILE).read_bytes(),
        trusted,
    )
    for entry in manifest.files:
        sha, size = hash_file(release_dir / entry.path)
        if (sha, size) != (entry.sha256, entry.size):
            raise VerificationError(f"{entry.path}: sha256 or size differs from release.json")
    return manifest


def unpack_wheels(release_dir: Path, manifest: AgentReleaseManifest, target: Path) -> None:
    """Install a verified release: unpack each wheel into `target` (paths checked)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in manifest.files:
        if not entry.path.endswith(".whl"):
            continue
        with zipfile.ZipFile(release_dir / entry.path) as zf:
            for info in zf.infolist():
                rel = PurePosixPath(info.filename)
                if rel.is_absolute() or ".." in rel.parts:
                    raise VerificationError(f"{entry.path}: unsafe path {info.filename!r}")
            zf.extractall(target)
