"""The API's /metrics: route templates as labels, domain counters, outbox backlog."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_orders import GOOD_ORDER
from tests.conftest import Account


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_labelled_by_route_template(
    client: httpx.AsyncClient, alice: Account
) -> None:
    before = await scrape(client)
    order = (await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)).json()
    await client.get(f"/orders/{order['id']}/", headers=alice.headers)  # miss
    await client.get(f"/orders/{order['id']}/", headers=alice.headers)  # hit
    await client.get("/definitely/not/a/route")
    after = await scrape(client)
    route = "/orders/{order_id}/"
    assert (
        value(after, "oms_http_requests_total", method="GET", route=route, status="200")
        - (value(before, "oms_http_requests_total", method="GET", route=route, status="200"))
        == 2
    )
    assert not any(order["id"] in str(labels) for _, labels in after)  # never the raw path
    assert (
        value(after, "oms_http_requests_total", method="GET", route="<unmatched>", status="404")
        >= 1
    )
    assert value(after, "oms_orders_created_total") - value(before, "oms_orders_created_total") == 1
    for result in ("hit", "miss"):
        delta = value(after, "oms_order_cache_requests_total", result=result) - value(
            before, "oms_order_cache_requests_total", result=result
        )
        assert delta == 1, result
    assert (
        value(after, "oms_http_request_duration_seconds_count", method="POST", route="/orders/")
        >= 1
    )


async def test_transitions_and_rate_limits_are_counted(
    client: httpx.AsyncClient, alice: Account
) -> None:
    before = await scrape(client)
    order = (await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)).json()
    await client.patch(
        f"/orders/{order['id']}/", json={"status": "CANCELED"}, headers=alice.headers
    )
    for _ in range(5):
        await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)
    after = await scrape(client)
    key = {"from_status": "PENDING", "to_status": "CANCELED"}
    assert (
        value(after, "oms_order_status_transitions_total", **key)
        - value(before, "oms_order_status_transitions_total", **key)
        == 1
    )
    assert (
        value(after, "oms_rate_limited_requests_total", scope="create_order")
        - value(before, "oms_rate_limited_requests_total", scope="create_order")
        == 1
    )


async def test_outbox_backlog_is_read_at_scrape_time(
    client: httpx.AsyncClient, alice: Account
) -> None:
    # The test app runs without a relay, so every created order stays in the outbox.
    for _ in range(3):
        await client.post("/orders/", json=GOOD_ORDER, headers=alice.headers)
    samples = await scrape(client)
    assert value(samples, "oms_outbox_backlog_messages") == 3
    assert value(samples, "oms_outbox_oldest_unsent_age_seconds") > 0
