"""The probe/metrics HTTP server the consumer and worker expose."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter

from oms.observability.probe_server import ProbeServer


async def test_probe_server_reports_liveness_readiness_and_metrics() -> None:
    registry = CollectorRegistry()
    counter = Counter("oms_probe_test_total", "a test counter", registry=registry)
    counter.inc(3)
    checks = {"rabbitmq": True, "consuming": False}
    server = ProbeServer("127.0.0.1", 0, lambda: dict(checks), registry).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
            not_ready = await http.get("/health/ready")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"] == checks
            checks["consuming"] = True
            assert (await http.get("/health/ready")).status_code == 200
            metrics = await http.get("/metrics")
            assert "oms_probe_test_total 3.0" in metrics.text
            assert (await http.get("/nope")).status_code == 404
    finally:
        server.stop()
