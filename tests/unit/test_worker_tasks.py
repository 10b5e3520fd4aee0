"""The worker in Celery's usual shape: `oms_worker.app` makes the app and names its tasks
module, `oms_worker.tasks.process_order_task` is a module-level task under the name that task
messages in flight carry, with the settings' retry policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from oms_worker.dead_letters import order_event_dead_letter, publish_dead_letter

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json
from oms_worker.app import app
app.loader.import_default_modules()  # what `celery worker` does at start
from oms_worker.tasks import process_order_task
task = app.tasks["oms.process_order_task"]
print(json.dumps({
    "include": list(app.conf.include),
    # The decorator returns a proxy until the app is finalized: compare what it stands for.
    "same": task is process_order_task._get_current_object(),
    "max_retries": task.max_retries,
    "default_retry_delay": task.default_retry_delay,
    "acks_late": task.acks_late,
    "reject_on_worker_lost": task.reject_on_worker_lost,
}))
"""


def _task(**env: str) -> dict[str, object]:
    # RABBITMQ_URL: the app needs a broker URL on import; it is never dialled.
    environment = {**os.environ, "RABBITMQ_URL": "amqp://x/", **env}
    output = subprocess.check_output([sys.executable, "-c", PROBE], cwd=REPO, env=environment)
    loaded: dict[str, object] = json.loads(output.decode().strip().splitlines()[-1])
    return loaded


def test_process_order_task_keeps_its_name_and_retry_policy() -> None:
    task = _task()
    assert task["include"] == ["oms_worker.tasks"]
    assert task["same"] is True
    assert (task["max_retries"], task["default_retry_delay"]) == (3, 60)
    assert task["acks_late"] is True
    assert task["reject_on_worker_lost"] is True


def test_the_retry_policy_comes_from_the_settings() -> None:
    task = _task(ORDER_TASK_MAX_RETRIES="5", ORDER_TASK_RETRY_DELAY_SECONDS="2.5")
    assert (task["max_retries"], task["default_retry_delay"]) == (5, 3)


def test_dead_lettering_to_an_unreachable_broker_fails_within_its_timeout() -> None:
    # The task then fails (logged) instead of hanging on a broker that is not there.
    letter = order_event_dead_letter(uuid.uuid4(), str(uuid.uuid4()), "reason")
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        publish_dead_letter("amqp://guest:guest@127.0.0.1:1//", letter, 2.0)
    assert time.monotonic() - started < 10
