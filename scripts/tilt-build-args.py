"""The build arguments the Tiltfile gives every `docker_build`, chosen as `make images` chooses
them (scripts/images.py), printed as one JSON object:

    PYTHON_IMAGE     python:3.11-slim (or $PYTHON_IMAGE) when the engine has it, else the local
                     Debian bookworm base scripts/images.py builds (pulled first only with
                     IMAGE_PULL=1)
    EXTRA_CA_CERTS   the certificates of SSL_CERT_FILE (a TLS-intercepting proxy's CA) that the
                     base image lacks; absent when SSL_CERT_FILE is unset

Identical arguments to `make images` also mean the builder's layers are shared with it. Starts a
Docker engine first when none answers and it may (scripts/images.py `ensure_engine`). Anything
it says goes to stderr: stdout is the JSON the Tiltfile decodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import images


def base_image() -> str:
    configured = os.environ.get("PYTHON_IMAGE", images.DEFAULT_BASE)
    # The local base, once `make images` made it, is what ensure_base would pick anyway.
    for present in (configured, images.LOCAL_BASE):
        if images.image_exists(present):
            return present
    return images.ensure_base(configured)


def build_args() -> dict[str, str]:
    images.ensure_engine()
    base = base_image()
    arguments = {"PYTHON_IMAGE": base}
    ca_file = os.environ.get("SSL_CERT_FILE")
    if ca_file:
        arguments["EXTRA_CA_CERTS"] = images.extra_certificates(Path(ca_file), base)
    return arguments


def main() -> int:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            arguments = build_args()
    except images.ImagesError as error:
        print(f"tilt-build-args: {error}", file=sys.stderr)
        return 1
    json.dump(arguments, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
