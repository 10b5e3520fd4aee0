"""A real Prometheus (Debian's binary) on a free local port, scraping our services."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness import free_port
from tests.pipeline.support import eventually

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "observability" / "prometheus").glob("*.rules.yaml"))


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} not found: `make pytest` installs it (Debian prometheus)")
    return found


@dataclass
class PrometheusServer:
    workdir: Path
    targets: dict[str, str]  # job -> host:port serving /metrics
    port: int = field(default_factory=free_port)
    # Jobs written out in full (e.g. Kubernetes service discovery), after the static targets.
    scrape_configs: list[dict[str, Any]] = field(default_factory=list)
    rule_files: list[Path] = field(default_factory=lambda: list(RULE_FILES))
    interval: str = "1s"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                *(
                    {"job_name": job, "static_configs": [{"targets": [target]}]}
                    for job, target in self.targets.items()
                ),
                *self.scrape_configs,
            ],
        }

    async def start(self) -> PrometheusServer:
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        log = (self.workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        async with httpx.AsyncClient(timeout=2) as http:

            async def ready() -> bool:
                assert self.process is not None
                assert self.process.poll() is None, self.logs()
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get(f"{self.url}/-/ready")).status_code == 200
                return False

            await eventually(ready, 30, interval=0.1, message="prometheus to be ready")
        return self

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PrometheusServer]:
        """Started for the block, stopped after it (also when the block fails)."""
        await self.start()
        try:
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def logs(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def api(self, path: str, **params: str) -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{self.url}/api/v1/{path}", params=params)
        body = response.json()
        assert body.get("status") == "success", body
        return body["data"]

    async def query(self, promql: str) -> list[dict[str, Any]]:
        data = await self.api("query", query=promql)
        result: list[dict[str, Any]] = data["result"]
        return result

    async def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        # The step as a number of seconds: a duration string cannot say `1.0s` or `0.5s`.
        data = await self.api(
            "query_range", query=promql, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending or firing), each with its labels and `state`."""
        data = await self.api("alerts")
        alerts: list[dict[str, Any]] = data["alerts"]
        return alerts

    async def targets_up(self) -> list[dict[str, Any]]:
        data = await self.api("targets", state="active")
        targets: list[dict[str, Any]] = data["activeTargets"]
        return targets

    async def value(self, promql: str) -> float | None:
        """The single value of an instant query; None when it returns no series."""
        result = await self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])
