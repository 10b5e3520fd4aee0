"""`oms-operator` as a process against the real API server, with the RBAC the chart grants its
ServiceAccount (a TokenRequest token) and a real RabbitMQ queue. The tests run in file order on
one release (conftest `release`): keys, scaling, repair, rotation, restarts, deletion."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import aio_pika
import httpx

from oms.db.models import UserRole
from oms.security.tokens import issue_access_token, verify_access_token
from tests.cluster.conftest import Release
from tests.cluster.support import (
    api_key_set,
    cluster_script,
    cluster_status,
    wait_until,
)
from tests.operator.observe import condition, scrape

# Every token names an account (claim `akey`); these tests only look at its signature.
ACCOUNT_KEY = uuid.uuid4()


def key_state(release: Release) -> dict[str, Any] | None:
    data = release.kube.secret_data(release.namespace, release.key_secret)
    if data is None or "kid" not in data or "jwks.json" not in data:
        return None
    jwks = json.loads(data["jwks.json"])
    return {
        "kid": data["kid"].decode(),
        "published": [key["kid"] for key in jwks["keys"]],
        "staged": "next.pem" in data,
        "data": data,
    }


def ordersystem(release: Release) -> dict[str, Any]:
    return release.kube.json("-n", release.namespace, "get", "ordersystem", release.name)


def event_reasons(release: Release) -> set[str]:
    return {event["reason"] for event in release.kube.events(release.namespace, release.name)}


async def publish(url: str, count: int) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for number in range(count):
            message = aio_pika.Message(body=f"task {number}".encode())
            await channel.default_exchange.publish(message, routing_key="order_tasks")


async def purge(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("order_tasks", passive=True)
        await queue.purge()


def replicas(release: Release) -> int:
    return release.kube.replicas(release.namespace, release.worker)


def test_creates_the_key_secret_owned_by_the_ordersystem(release: Release) -> None:
    state = wait_until(lambda: key_state(release), timeout=60)
    assert state["kid"] in state["published"]
    assert {"private.pem", "public.pem", "kid", "jwks.json"} <= set(state["data"])
    secret = release.kube.json("-n", release.namespace, "get", "secret", release.key_secret)
    owner = ordersystem(release)
    [reference] = secret["metadata"]["ownerReferences"]
    assert reference["uid"] == owner["metadata"]["uid"]
    assert reference["kind"] == "OrderSystem"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "oms-operator"

    def ready() -> dict[str, Any] | None:
        current = ordersystem(release)
        found = condition(current, "Ready")
        return current if found and found["status"] == "True" else None

    current = wait_until(ready, timeout=30)
    assert current["status"]["keyId"] == state["kid"]
    assert current["status"]["observedGeneration"] == current["metadata"]["generation"]
    assert condition(current, "KeysReady")["reason"] == "KeysProvisioned"  # type: ignore[index]
    wait_until(lambda: "KeyCreated" in event_reasons(release), timeout=30)
    # The API's key loader takes the Secret as mounted; a token it signs verifies.
    settings, keys = api_key_set(release.workdir / "created", state["data"])
    assert keys.signing_kid == state["kid"]
    token, _ = issue_access_token(settings, keys, 7, UserRole.USER, account_key=ACCOUNT_KEY)
    assert verify_access_token(settings, keys, token).user_id == 7
    assert release.operator.running, release.operator.logs()


async def test_scales_the_worker_from_the_real_queue_depth(release: Release) -> None:
    assert replicas(release) == 1
    await publish(release.amqp_url, 100)  # 100 / 20 per replica = 5
    wait_until(lambda: replicas(release) == 5, timeout=30)
    status = ordersystem(release)["status"]
    assert status["queueDepth"] == 100
    assert status["desiredReplicas"] == 5
    # The Deployment controller follows the scale subresource: its ReplicaSet now wants 5 pods.
    wait_until(
        lambda: (
            release.kube.json("-n", release.namespace, "get", "deployment", release.worker)[
                "status"
            ].get("replicas")
            == 5
        ),
        timeout=30,
    )
    assert "ScaledUp" in event_reasons(release)
    samples = scrape(release.metrics_port)
    labels = {"namespace": release.namespace, "ordersystem": release.name}
    assert samples[("oms_operator_desired_replicas", tuple(sorted(labels.items())))] == 5
    depth = {**labels, "queue": "order_tasks", "state": "ready"}
    assert samples[("oms_operator_queue_depth", tuple(sorted(depth.items())))] == 100

    await publish(release.amqp_url, 100)  # 200 -> 10, clamped to maxReplicas 8
    wait_until(lambda: replicas(release) == 8, timeout=30)

    await purge(release.amqp_url)
    drained = time.monotonic()
    wait_until(lambda: ordersystem(release)["status"].get("queueDepth") == 0, timeout=30)
    # The stabilization window (12 s) keeps the workers through the lull ...
    while time.monotonic() - drained < 8:
        assert replicas(release) == 8
        time.sleep(0.5)
    # ... then they go down to minReplicas.
    wait_until(lambda: replicas(release) == 1, timeout=40)
    assert time.monotonic() - drained >= 12 - 1.5
    assert "ScaledDown" in event_reasons(release)
    scaling = condition(ordersystem(release), "ScalingActive")
    assert scaling is not None
    assert scaling["status"] == "True"


def test_recreates_a_deleted_key_secret_with_a_new_key(release: Release) -> None:
    before = wait_until(lambda: key_state(release), timeout=30)
    release.kube.run("-n", release.namespace, "delete", "secret", release.key_secret)
    after = wait_until(
        lambda: (state := key_state(release)) and state["kid"] != before["kid"] and state,
        timeout=30,
    )
    # Deletion is the revocation path: nothing of the old key survives.
    assert before["kid"] not in after["published"]


def test_repairs_a_corrupted_key_secret(release: Release) -> None:
    before = wait_until(lambda: key_state(release), timeout=30)
    release.kube.run(
        "-n", release.namespace, "patch", "secret", release.key_secret, "--type=merge",
        "-p", json.dumps({"stringData": {"private.pem": "garbage"}}),
    )  # fmt: skip
    after = wait_until(
        lambda: (state := key_state(release)) and state["kid"] != before["kid"] and state,
        timeout=30,
    )
    # The old public key is still readable from jwks.json: kept, so its tokens keep verifying.
    assert before["kid"] in after["published"]
    assert after["data"]["private.pem"].startswith(b"-----BEGIN PRIVATE KEY-----")
    wait_until(lambda: "KeyRepaired" in event_reasons(release), timeout=30)


def test_rotates_publishing_before_signing(release: Release) -> None:
    before = wait_until(lambda: key_state(release), timeout=30)
    old_settings, old_keys = api_key_set(release.workdir / "before-rotation", before["data"])
    old_token, _ = issue_access_token(
        old_settings, old_keys, 42, UserRole.ADMIN, account_key=ACCOUNT_KEY
    )
    # The key is younger than an hour; a keySize change starts a rotation at once.
    jwt: dict[str, Any] = {"rotationInterval": "1h", "propagationDelay": "5s", "keySize": 3072}
    patch = {"spec": {"jwt": jwt}}
    release.kube.run(
        "-n", release.namespace, "patch", "ordersystem", release.name, "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip
    observations: list[tuple[float, dict[str, Any]]] = []

    def promoted() -> bool:
        state = key_state(release)
        if state is not None:
            observations.append((time.monotonic(), state))
            # Never signs with a key the JWKS does not publish.
            assert state["kid"] in state["published"], state
        return state is not None and state["kid"] != before["kid"]

    wait_until(promoted, timeout=60, interval=0.2)
    staged = [t for t, s in observations if s["kid"] == before["kid"] and len(s["published"]) > 1]
    assert staged, "the new key was never published before it signed"
    signing_since = observations[-1][0]
    assert signing_since - staged[0] >= 5 - 1.5
    new_kid = observations[-1][1]["kid"]
    assert new_kid in observations[-1][1]["published"]
    # The old key stays published (retired) for the overlap the docs promise.
    assert before["kid"] in observations[-1][1]["published"]
    wait_until(lambda: {"KeyStaged", "KeyRotated"} <= event_reasons(release), timeout=30)
    status = ordersystem(release)["status"]
    assert status["keyId"] == new_kid
    assert before["kid"] in status["publishedKeyIds"]
    # A token signed before the rotation still verifies with the rotated Secret.
    settings, keys = api_key_set(release.workdir / "after-rotation", observations[-1][1]["data"])
    assert keys.signing_kid == new_kid
    assert verify_access_token(settings, keys, old_token).user_id == 42


def test_status_conditions_and_events_in_kubectl_describe(release: Release) -> None:
    described = release.kube.run(
        "-n", release.namespace, "describe", "ordersystem", release.name
    ).stdout
    for expected in (
        "Conditions:",
        "KeysReady",
        "ScalingActive",
        "Events:",
        "KeyCreated",
        "ScaledUp",
    ):
        assert expected in described, described


async def test_survives_restarts_of_itself_and_of_the_api_server(
    release: Release, own_node: dict[str, Any]
) -> None:
    before = wait_until(lambda: key_state(release), timeout=30)
    assert release.operator.stop() == 0, release.operator.logs()[-3000:]
    release.operator.start()
    # It acts again: a backlog scales the workers (each pass reconciles the keys first) ...
    await publish(release.amqp_url, 60)
    wait_until(lambda: replicas(release) == 3, timeout=60)
    # ... and the keys are neither lost nor replaced.
    after = wait_until(lambda: key_state(release), timeout=30)
    assert after["kid"] == before["kid"]
    assert set(before["published"]) <= set(after["published"])
    # Restart the API server while it runs; its watch and polls recover.
    cluster_script("restart", "kube-apiserver")
    await publish(release.amqp_url, 40)
    wait_until(lambda: replicas(release) == 5, timeout=60)
    assert release.operator.running, release.operator.logs()[-3000:]
    final = wait_until(lambda: key_state(release), timeout=30)
    assert final["kid"] == before["kid"]
    await purge(release.amqp_url)


def etcd(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """etcd's JSON gateway (the control plane's etcd speaks plain HTTP on 127.0.0.1)."""
    port = cluster_status()["ports"]["etcd"]
    answer = httpx.post(f"http://127.0.0.1:{port}{path}", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


def test_a_watch_whose_history_was_compacted_away_is_relisted(
    release: Release, own_node: dict[str, Any]
) -> None:
    """While the API server is down, etcd moves on and compacts: the operator's watch position
    no longer exists (410 Gone), so it must list again to see later changes."""
    seen = ordersystem(release)["metadata"]["resourceVersion"]
    cluster_script("stop", "kube-apiserver")
    for number in range(3):
        key = base64.b64encode(f"/oms-tests/filler-{number}".encode()).decode()
        revision = etcd("/v3/kv/put", {"key": key, "value": key})["header"]["revision"]
    etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
    cluster_script("start", "kube-apiserver")
    # The server indeed answers a watch from that position with "too old resource version".
    path = f"/apis/oms.dev/v1alpha1/namespaces/{release.namespace}/ordersystems"
    query = f"?watch=true&resourceVersion={seen}&timeoutSeconds=3"
    expired = release.kube.run("get", "--raw", path + query, check=False)
    assert '"code":410' in expired.stdout, expired
    # A spec change made now still reaches the operator.
    release.kube.run(
        "-n", release.namespace, "patch", "ordersystem", release.name, "--type=merge",
        "-p", json.dumps({"spec": {"workers": {"paused": True}}}),
    )  # fmt: skip

    def paused() -> bool:
        scaling = condition(ordersystem(release), "ScalingActive")
        return scaling is not None and scaling["reason"] == "Paused"

    wait_until(paused, timeout=60)
    assert ordersystem(release)["status"]["paused"] is True
    assert release.operator.running, release.operator.logs()[-3000:]


def test_its_log_is_json_lines_of_reasonable_size(release: Release) -> None:
    lines = release.operator.logs().splitlines()
    assert len(lines) > 10
    records = [json.loads(line) for line in lines]
    assert {record["service"] for record in records} == {"operator"}
    # Kopf's per-event records used to carry its whole OperatorSettings (kilobytes per line).
    assert not [line for line in lines if "OperatorSettings(" in line]
    handled = [r for r in records if r["msg"].startswith("Handler 'ordersystem_event'")]
    assert handled
    assert handled[0]["k8s_ref"]["name"] == release.name


def test_deleting_the_ordersystem_lets_the_garbage_collector_remove_the_secret(
    release: Release,
) -> None:
    assert key_state(release) is not None
    release.kube.run("-n", release.namespace, "delete", "ordersystem", release.name, "--wait=true")
    wait_until(
        lambda: release.kube.get("secret", release.key_secret, release.namespace) is None,
        timeout=60,
    )
    # The worker Deployment belongs to the chart and stays.
    assert release.kube.get("deployment", release.worker, release.namespace) is not None
    assert release.operator.running, release.operator.logs()[-3000:]
