"""RSA signing keys and the set of public keys we accept (JWKS), with rotation.

Sources, first match wins: `JWT_PRIVATE_KEY` (PEM in the environment), `JWT_PRIVATE_KEY_PATH`
(a file, e.g. a mounted Secret), and in development a pair generated once under
`DATA_DIR/jwt/`. `JWT_JWKS_PATH` adds public keys that stay valid after a rotation. Key ids are
RFC 7638 thumbprints, so every process (API, operator) derives the same `kid` from a key.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from oms.security.jwk import (
    KeyConfigurationError,
    generate_private_key,
    key_id,
    load_private_key,
    parse_jwks,
    private_key_to_pem,
    public_jwk,
    public_key_to_pem,
)
from oms.settings import AuthSettings, DatabaseSettings, SigningKeySettings

__all__ = [
    "KeyConfigurationError",
    "KeySet",
    "KeyStore",
    "build_key_set",
    "generate_private_key",
    "key_id",
    "load_key_set",
    "load_private_key",
    "parse_jwks",
    "private_key_to_pem",
    "public_jwk",
    "public_key_to_pem",
]

logger = logging.getLogger("oms.security.keys")


@dataclass(frozen=True)
class KeySet:
    """The active signing key and every public key a token may be verified with."""

    signing_key: rsa.RSAPrivateKey
    signing_kid: str
    verification_keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(key) for key in self.verification_keys.values()]}


def build_key_set(
    signing_key: rsa.RSAPrivateKey, extra_public: list[rsa.RSAPublicKey] | None = None
) -> KeySet:
    public = signing_key.public_key()
    kid = key_id(public)
    keys = {kid: public}
    for extra in extra_public or []:
        keys.setdefault(key_id(extra), extra)
    return KeySet(signing_key=signing_key, signing_kid=kid, verification_keys=keys)


def _dev_key_path(settings: DatabaseSettings) -> Path:
    return settings.DATA_DIR / "jwt" / "private.pem"


def _ensure_dev_key(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = private_key_to_pem(generate_private_key())
    # Created with 0600 and O_EXCL: two processes starting at once keep the first key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem


def _watched_files(settings: AuthSettings) -> list[Path]:
    files = [settings.JWT_PRIVATE_KEY_PATH, settings.JWT_JWKS_PATH]
    return [path for path in files if path is not None]


def load_key_set(settings: SigningKeySettings) -> KeySet:
    if settings.JWT_PRIVATE_KEY is not None:
        pem = settings.JWT_PRIVATE_KEY.get_secret_value().encode()
    elif settings.JWT_PRIVATE_KEY_PATH is not None:
        try:
            pem = settings.JWT_PRIVATE_KEY_PATH.read_bytes()
        except OSError as error:
            raise KeyConfigurationError(
                f"JWT_PRIVATE_KEY_PATH={settings.JWT_PRIVATE_KEY_PATH} cannot be read: {error}"
            ) from error
    elif settings.generates_signing_key:
        if not settings.embedded:
            logger.warning(
                "JWT_AUTO_GENERATE_KEYS=true outside the embedded mode: development only",
                extra={"key_path": str(_dev_key_path(settings))},
            )
        pem = _ensure_dev_key(_dev_key_path(settings))
    else:
        raise KeyConfigurationError(
            "No JWT signing key: set JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_PATH (write one with "
            "`oms generate-keys`). Keys are generated automatically only in the embedded mode "
            "(SQLite), or anywhere with JWT_AUTO_GENERATE_KEYS=true for development."
        )
    extra: list[rsa.RSAPublicKey] = []
    if settings.JWT_JWKS_PATH is not None and settings.JWT_JWKS_PATH.exists():
        extra = parse_jwks(json.loads(settings.JWT_JWKS_PATH.read_text()))
    return build_key_set(load_private_key(pem), extra)


class KeyStore:
    """Holds the current KeySet; re-reads mounted key files when they change (rotation).

    The files are stat-ed at most every `JWT_KEY_RELOAD_SECONDS`, never per request.
    """

    def __init__(self, settings: SigningKeySettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._key_set = load_key_set(settings)
        self._stamp = self._files_stamp()
        self._checked_at = time.monotonic()

    def _files_stamp(self) -> tuple[float, ...]:
        stamps = []
        for path in _watched_files(self._settings):
            try:
                stamps.append(path.stat().st_mtime)
            except OSError:
                stamps.append(-1.0)
        return tuple(stamps)

    def current(self) -> KeySet:
        interval = self._settings.JWT_KEY_RELOAD_SECONDS
        if interval and time.monotonic() - self._checked_at >= interval:
            self._maybe_reload()
        return self._key_set

    def _maybe_reload(self) -> None:
        with self._lock:
            self._checked_at = time.monotonic()
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return
            try:
                self._key_set = load_key_set(self._settings)
            except (KeyConfigurationError, OSError, ValueError):
                return  # A half-written Secret update: keep serving with the previous keys.
            self._stamp = stamp
