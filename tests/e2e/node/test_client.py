"""A client through the ingress (Traefik on the node): register, token, create, read (the second
read served from Redis), change the status, list; each order processed by a worker pod."""

from __future__ import annotations

import redis.asyncio as redis
from tests.e2e.node.support import (
    Release,
    processed_in_logs,
    sign_up,
)
from tests.pipeline.support import assert_processed_exactly_once, create_orders, eventually


async def test_a_client_through_the_ingress(release: Release) -> None:
    async with release.client() as http:
        account = await sign_up(http)
        order_ids = await create_orders(http, account.token, 10)

        first = await http.get(f"/orders/{order_ids[0]}/", headers=account.headers)
        assert first.status_code == 200, first.text
        assert first.json()["user_id"] == account.id
        # The read left the order in the cache (key order:{id}, 300 s), as the spec asks.
        cache = redis.Redis(host=release.service_ip("redis"), port=6379, db=0)
        try:
            ttl = await cache.ttl(f"order:{order_ids[0]}")
        finally:
            await cache.aclose()
        assert 0 < ttl <= 300
        again = await http.get(f"/orders/{order_ids[0]}/", headers=account.headers)
        assert again.status_code == 200

        listed = await http.get(
            f"/orders/user/{account.id}", params={"limit": 100}, headers=account.headers
        )
        assert listed.status_code == 200, listed.text
        assert {order["id"] for order in listed.json()["items"]} == set(order_ids)

        async def all_processed() -> bool:
            for order_id in order_ids:
                seen = await http.get(f"/orders/{order_id}/", headers=account.headers)
                if seen.json()["processed_at"] is None:
                    return False
            return True

        await eventually(all_processed, timeout=60, interval=0.5, message="orders processed")
        # Processed by the worker pods, each order by exactly one effective run.
        assert set(order_ids) <= processed_in_logs(release.logs("worker"))
        await assert_processed_exactly_once(release.settings(), order_ids)

        canceled = await http.patch(
            f"/orders/{order_ids[1]}/", json={"status": "CANCELED"}, headers=account.headers
        )
        assert canceled.status_code == 200, canceled.text
        assert canceled.json()["status"] == "CANCELED"
