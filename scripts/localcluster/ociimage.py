"""A one-layer image written as a `docker save` archive, without an engine or a registry: how the
pod sandbox (pause) gets into the node's containerd (`ctr images import`)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

# A fixed time in every header and the config, so the same binary always gives the same image id.
EPOCH = 0


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = EPOCH
    archive.addfile(info, io.BytesIO(data))


def single_binary_image(reference: str, binary: Path, entrypoint: str) -> bytes:
    """The archive of an image whose only file is `binary`, at `entrypoint`, run as its command."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w", format=tarfile.GNU_FORMAT) as layer:
        _add(layer, entrypoint.lstrip("/"), binary.read_bytes(), 0o755)
    layer_bytes = layer_buffer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": [entrypoint], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/localcluster"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [
        {"Config": config_name, "RepoTags": [reference], "Layers": [f"{diff_id}/layer.tar"]}
    ]
    archive_buffer = io.BytesIO()
    with tarfile.open(fileobj=archive_buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        _add(archive, config_name, config_bytes)
        _add(archive, f"{diff_id}/layer.tar", layer_bytes)
        _add(archive, "manifest.json", json.dumps(manifest).encode())
    return archive_buffer.getvalue()
