"""The signing keys for real: the operator pod, with only the chart's RBAC, creates the key Secret;
the API pods mount it and sign with it; a rotation reaches the running API pods without a restart
(kubelet refreshes the mounted Secret, the API re-reads the files), and a token signed before the
rotation keeps verifying while its key is retained, which ends only after the token has expired.

Token lifetime 2 minutes (no leeway), retention 2 minutes and a 30 s propagation delay keep the
whole story under 3 minutes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jwt
from tests.e2e.node.support import Release, create_order, log_in, sign_up
from tests.pipeline.support import eventually

RELEASE_SETS = (
    "config.tokens.accessTokenExpireMinutes=2",
    "config.tokens.leewaySeconds=0",
    "config.tokens.keyReloadSeconds=2",
)
# The propagation delay must outlast the kubelet's refresh of every API pod's mounted Secret (its
# pod sync, every 10 s here, plus jitter): with 10 s one pod could sign with the new key while the
# other did not publish it yet. The default (2 minutes) has room to spare.
RELEASE_SET_JSON = (
    'orderSystem.spec={"jwt": {"propagationDelay": "30s", "retiredKeyRetention": "2m"}}',
)
# Enough reads through the ingress that both API pods answer some of them.
READS = 8


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def published_kids(http: httpx.AsyncClient) -> set[str]:
    answer = await http.get("/.well-known/jwks.json")
    assert answer.status_code == 200, answer.text
    return {key["kid"] for key in answer.json()["keys"]}


def api_pods(release: Release) -> dict[str, int]:
    """API pod name -> restarts of its container."""
    return {
        pod["metadata"]["name"]: sum(s["restartCount"] for s in pod["status"]["containerStatuses"])
        for pod in release.pods("api")
    }


def test_the_operator_pod_made_the_key_secret_with_the_charts_rbac(release: Release) -> None:
    secret: dict[str, Any] = json.loads(
        release.kubectl("get", "secret", "oms-jwt-keys", "-o", "json")
    )
    owners = secret["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["name"]) for o in owners] == [("OrderSystem", "oms")]
    # Written by the operator's own account: the chart's ServiceAccount, through its Role.
    account = f"system:serviceaccount:{release.namespace}:oms-operator"
    can = release.kube.run(
        "auth", "can-i", "create", "secrets", "-n", release.namespace, f"--as={account}"
    )
    assert can.stdout.strip() == "yes"
    cannot = release.kube.run(
        "auth", "can-i", "list", "secrets", "-n", release.namespace, f"--as={account}", check=False
    )
    assert cannot.stdout.strip() == "no"
    events = release.kube.json("-n", release.namespace, "get", "events")["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"].get("kind") == "OrderSystem"}
    assert "KeyCreated" in reasons, reasons


async def test_a_rotation_reaches_the_running_api_and_old_tokens_keep_verifying(
    release: Release,
) -> None:
    keys = release.secret("oms-jwt-keys")
    first_kid = keys["kid"].strip()
    pods_before = api_pods(release)
    async with release.client() as http:
        account = await sign_up(http)
        assert kid_of(account.token) == first_kid
        assert first_kid in await published_kids(http)
        old_token, issued = account.token, time.monotonic()
        order_id = await create_order(http, account)

        # A key size change starts a graceful rotation.
        rotation_started = time.monotonic()
        release.kubectl(
            "patch", "ordersystem", release.name, "--type=merge",
            "-p", json.dumps({"spec": {"jwt": {"keySize": 3072}}}),
        )  # fmt: skip

        async def signed_with_a_new_key() -> str | None:
            token = await log_in(http, account.email, account.password)
            return token if kid_of(token) != first_kid else None

        new_token = await eventually(
            signed_with_a_new_key, timeout=150, interval=2, message="tokens signed by a new key"
        )
        switched_after = time.monotonic() - rotation_started
        new_kid = kid_of(new_token)
        assert release.secret("oms-jwt-keys")["kid"].strip() == new_kid
        # The same pods, never restarted: the rotation came through the mounted files.
        assert api_pods(release) == pods_before

        # Both tokens work; the old one verifies against the retired, still published key.
        for token in (old_token, new_token):
            seen = await http.get(
                f"/orders/{order_id}/", headers={"Authorization": f"Bearer {token}"}
            )
            assert seen.status_code == 200, seen.text
        assert {first_kid, new_kid} <= await published_kids(http)

        # The retired key goes only after every token it signed has expired.
        await eventually(
            lambda: _without(http, first_kid), timeout=300, interval=3, message="old key retired"
        )
        assert time.monotonic() - issued >= 120
        expired = await http.get(
            f"/orders/{order_id}/", headers={"Authorization": f"Bearer {old_token}"}
        )
        assert expired.status_code == 401
        assert new_kid in await published_kids(http)
    print(f"\nrotation: new key signing after {switched_after:.0f} s, pods unchanged {pods_before}")


async def _without(http: httpx.AsyncClient, kid: str) -> bool:
    await asyncio.sleep(0)
    return kid not in await published_kids(http)
