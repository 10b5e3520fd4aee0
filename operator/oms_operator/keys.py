"""The JWT signing-key lifecycle as pure functions over a `KeyRing` read from (and written to) the
key Secret.

A rotation has two steps so that no API replica ever meets a token signed by a key it does not
know yet: the next key is first *staged* (its public half joins `jwks.json`, the old key still
signs), and only after `propagationDelay` (time for the kubelet to refresh every mounted copy) is
it *promoted* to signer; the previous signer is *retired*: its public key stays published until
every token it signed has expired (`retiredKeyRetention` >= token lifetime + clock skew), then it
is pruned.

Secret layout (read by the API through `JWT_PRIVATE_KEY_PATH` / `JWT_JWKS_PATH`):
`private.pem` (PKCS#8 signer), `public.pem`, `kid`, `jwks.json` (signer + staged + retired public
keys), `next.pem` while a key is staged, and the `oms.dev/key-lifecycle` annotation with the
timestamps this module needs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from oms.security.jwk import (
    KeyConfigurationError,
    key_id,
    load_private_key,
    parse_jwks,
    public_jwk,
    public_key_to_pem,
)

PRIVATE_KEY = "private.pem"
PUBLIC_KEY = "public.pem"
NEXT_PRIVATE_KEY = "next.pem"
KEY_ID = "kid"
JWKS = "jwks.json"
LIFECYCLE_ANNOTATION = "oms.dev/key-lifecycle"
REQUIRED_DATA = (PRIVATE_KEY, PUBLIC_KEY, KEY_ID, JWKS)


class KeyAction(StrEnum):
    NONE = "None"
    CREATE = "Create"  # no Secret yet (or it was deleted): a fresh key, nothing else published
    REPAIR = "Repair"  # the Secret is unusable: a fresh key, readable old public keys retired
    STAGE = "Stage"  # publish the next key while the current one still signs
    PROMOTE = "Promote"  # the staged key signs from now on, the old signer is retired
    PRUNE = "Prune"  # retired keys whose tokens have all expired leave the JWKS


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    key_size: int
    rotation_interval: timedelta
    propagation_delay: timedelta
    retention: timedelta


@dataclass(frozen=True, slots=True)
class SigningKey:
    pem: bytes
    kid: str
    key_size: int
    active_since: datetime
    jwk: dict[str, Any]  # the public half, derived once: parsing a private key costs ~40 ms


@dataclass(frozen=True, slots=True)
class StagedKey:
    pem: bytes
    kid: str
    key_size: int
    published_at: datetime
    jwk: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RetiredKey:
    kid: str
    jwk: dict[str, Any]
    retired_at: datetime
    published_until: datetime


@dataclass(frozen=True, slots=True)
class KeyRing:
    current: SigningKey
    staged: StagedKey | None = None
    retired: tuple[RetiredKey, ...] = ()

    def published_kids(self) -> list[str]:
        kids = [self.current.kid]
        if self.staged is not None:
            kids.append(self.staged.kid)
        kids.extend(key.kid for key in self.retired)
        return kids

    def rotation_due_at(self, policy: KeyPolicy) -> datetime:
        return self.current.active_since + policy.rotation_interval


@dataclass(frozen=True, slots=True)
class KeyPlan:
    action: KeyAction
    reason: str
    next_check_at: datetime | None = None  # when the next action falls due, if nothing changes


@dataclass(frozen=True, slots=True)
class SecretReading:
    """What a Secret holds: a ring, or why it cannot be used (and any public keys worth keeping)."""

    ring: KeyRing | None
    problem: str | None = None
    salvaged: tuple[dict[str, Any], ...] = ()


def data_digest(data: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(data):
        digest.update(name.encode() + b"\0" + data[name] + b"\0")
    return digest.hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        return load_private_key(pem)
    except (ValueError, TypeError, KeyConfigurationError) as error:
        raise ValueError(f"not an RSA private key in PEM: {error}") from error


def _jwks_entries(raw: bytes) -> list[dict[str, Any]]:
    document = json.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("jwks.json is not a JWK set")
    return [public_jwk(key) for key in parse_jwks(document)]


def _salvage_public_keys(data: dict[str, bytes]) -> tuple[dict[str, Any], ...]:
    try:
        return tuple(_jwks_entries(data.get(JWKS, b"")))
    except (ValueError, TypeError):
        return ()


def _lifecycle(annotations: dict[str, str]) -> dict[str, Any]:
    try:
        document = json.loads(annotations.get(LIFECYCLE_ANNOTATION, "{}"))
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _record(lifecycle: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = lifecycle.get(name)
    return value if isinstance(value, dict) else None


def read_secret(
    data: dict[str, bytes], annotations: dict[str, str], policy: KeyPolicy, now: datetime
) -> SecretReading:
    """Parse and check a key Secret. A Secret we did not write (no lifecycle annotation) is
    adopted as if its key had just been activated."""
    missing = [name for name in REQUIRED_DATA if not data.get(name)]
    if missing:
        return SecretReading(None, f"missing {', '.join(missing)}", _salvage_public_keys(data))
    try:
        private = _private_key(data[PRIVATE_KEY])
        kid = key_id(private.public_key())
        if data[KEY_ID].decode().strip() != kid:
            raise ValueError("kid does not match private.pem")
        if data[PUBLIC_KEY].strip() != public_key_to_pem(private.public_key()).strip():
            raise ValueError("public.pem does not match private.pem")
        published = {entry["kid"]: entry for entry in _jwks_entries(data[JWKS])}
        if kid not in published:
            raise ValueError("jwks.json does not publish the signing key")
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        return SecretReading(None, str(error), _salvage_public_keys(data))

    lifecycle = _lifecycle(annotations)
    recorded = _record(lifecycle, "current") or {}
    active_since = now
    if recorded.get("kid") == kid:
        active_since = _parse_time(recorded.get("activeSince")) or now
    current = SigningKey(
        data[PRIVATE_KEY], kid, private.key_size, active_since, public_jwk(private.public_key())
    )

    staged: StagedKey | None = None
    staged_record = _record(lifecycle, "staged")
    if staged_record is not None and data.get(NEXT_PRIVATE_KEY):
        try:
            next_private = _private_key(data[NEXT_PRIVATE_KEY])
        except ValueError:
            next_private = None
        if next_private is not None:
            next_kid = key_id(next_private.public_key())
            published_at = _parse_time(staged_record.get("publishedAt"))
            if next_kid == staged_record.get("kid") and next_kid in published and published_at:
                staged = StagedKey(
                    data[NEXT_PRIVATE_KEY],
                    next_kid,
                    next_private.key_size,
                    published_at,
                    public_jwk(next_private.public_key()),
                )

    retired_records = {
        str(item.get("kid")): item
        for item in lifecycle.get("retired", [])
        if isinstance(item, dict)
    }
    retired = []
    for other_kid, jwk in published.items():
        if other_kid == kid or (staged is not None and other_kid == staged.kid):
            continue
        record = retired_records.get(other_kid, {})
        retired.append(
            RetiredKey(
                other_kid,
                jwk,
                _parse_time(record.get("retiredAt")) or now,
                _parse_time(record.get("publishedUntil")) or now + policy.retention,
            )
        )
    return SecretReading(KeyRing(current, staged, tuple(retired)))


def plan_keys(reading: SecretReading | None, policy: KeyPolicy, now: datetime) -> KeyPlan:
    """The next step for the keys. `reading` None means the Secret does not exist."""
    if reading is None:
        return KeyPlan(KeyAction.CREATE, "SecretMissing")
    if reading.ring is None:
        return KeyPlan(KeyAction.REPAIR, "SecretInvalid")
    ring = reading.ring
    if any(key.published_until <= now for key in ring.retired):
        return KeyPlan(KeyAction.PRUNE, "RetiredKeyExpired")
    if ring.staged is not None:
        promote_at = ring.staged.published_at + policy.propagation_delay
        if now >= promote_at:
            return KeyPlan(KeyAction.PROMOTE, "StagedKeyPropagated")
        return KeyPlan(KeyAction.NONE, "WaitingForPropagation", _earliest(ring, promote_at))
    if ring.current.key_size != policy.key_size:
        return KeyPlan(KeyAction.STAGE, "KeySizeChanged")
    due = ring.rotation_due_at(policy)
    if now >= due:
        return KeyPlan(KeyAction.STAGE, "RotationDue")
    return KeyPlan(KeyAction.NONE, "UpToDate", _earliest(ring, due))


def _earliest(ring: KeyRing, moment: datetime) -> datetime:
    return min([moment, *(key.published_until for key in ring.retired)])


def new_ring(
    pem: bytes,
    key_size: int,
    now: datetime,
    policy: KeyPolicy,
    salvaged: tuple[dict[str, Any], ...] = (),
) -> KeyRing:
    """A fresh signer. Public keys salvaged from a broken Secret stay trusted for one retention
    period, so the tokens they signed keep working while the repair propagates."""
    public = _private_key(pem).public_key()
    kid = key_id(public)
    retired = tuple(
        RetiredKey(str(jwk["kid"]), jwk, now, now + policy.retention)
        for jwk in salvaged
        if jwk.get("kid") != kid
    )
    return KeyRing(SigningKey(pem, kid, key_size, now, public_jwk(public)), None, retired)


def stage(ring: KeyRing, pem: bytes, key_size: int, now: datetime) -> KeyRing:
    public = _private_key(pem).public_key()
    return replace(ring, staged=StagedKey(pem, key_id(public), key_size, now, public_jwk(public)))


def promote(ring: KeyRing, now: datetime, policy: KeyPolicy) -> KeyRing:
    if ring.staged is None:
        raise ValueError("nothing staged to promote")
    old = ring.current
    retired = (*ring.retired, RetiredKey(old.kid, old.jwk, now, now + policy.retention))
    staged = ring.staged
    signer = SigningKey(staged.pem, staged.kid, staged.key_size, now, staged.jwk)
    return KeyRing(signer, None, retired)


def prune(ring: KeyRing, now: datetime) -> KeyRing:
    return replace(ring, retired=tuple(key for key in ring.retired if key.published_until > now))


def jwks_document(ring: KeyRing) -> dict[str, Any]:
    keys = [ring.current.jwk]
    if ring.staged is not None:
        keys.append(ring.staged.jwk)
    keys.extend(key.jwk for key in ring.retired)
    return {"keys": keys}


def render_secret_data(ring: KeyRing) -> dict[str, bytes]:
    public = RSAAlgorithm.from_jwk(ring.current.jwk)
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("the signing key's JWK is not an RSA public key")
    data = {
        PRIVATE_KEY: ring.current.pem,
        PUBLIC_KEY: public_key_to_pem(public),
        KEY_ID: ring.current.kid.encode(),
        JWKS: json.dumps(jwks_document(ring), indent=2, sort_keys=True).encode(),
    }
    if ring.staged is not None:
        data[NEXT_PRIVATE_KEY] = ring.staged.pem
    return data


def render_lifecycle(ring: KeyRing) -> str:
    return json.dumps(
        {
            "current": {
                "kid": ring.current.kid,
                "keySize": ring.current.key_size,
                "activeSince": _iso(ring.current.active_since),
            },
            "staged": None
            if ring.staged is None
            else {"kid": ring.staged.kid, "publishedAt": _iso(ring.staged.published_at)},
            "retired": [
                {
                    "kid": key.kid,
                    "retiredAt": _iso(key.retired_at),
                    "publishedUntil": _iso(key.published_until),
                }
                for key in ring.retired
            ],
        },
        sort_keys=True,
    )
