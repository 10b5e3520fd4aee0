"""RSA key maths shared by the API and the operator: generate, serialise, load, JWK and RFC 7638
key ids. Pure functions over `cryptography` keys: no settings, no database, so the operator can
use them without the API's settings or SQLAlchemy (`oms.security.keys` builds on them).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class KeyConfigurationError(RuntimeError):
    """No usable signing key: the message says which setting to fix."""


def generate_private_key(key_size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def private_key_to_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_to_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyConfigurationError("JWT signing key must be an RSA private key")
    return key


def public_jwk(key: rsa.RSAPublicKey) -> dict[str, Any]:
    """The public key as a JWK with `kid` (RFC 7638 thumbprint), `use` and `alg`."""
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    jwk["kid"] = key_id(key)
    jwk["use"] = "sig"
    jwk["alg"] = "RS256"
    return jwk


def key_id(key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def parse_jwks(document: dict[str, Any]) -> list[rsa.RSAPublicKey]:
    keys: list[rsa.RSAPublicKey] = []
    for entry in document.get("keys", []):
        if entry.get("kty") != "RSA":
            continue
        key = RSAAlgorithm.from_jwk(entry)
        if isinstance(key, rsa.RSAPublicKey):
            keys.append(key)
    return keys
