"""`.env.example` documents every setting the code reads, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

from oms.settings import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_env_example_lists_every_setting() -> None:
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    # Read by prometheus_client itself, not by our Settings.
    assert listed - {"PROMETHEUS_MULTIPROC_DIR"} == set(Settings.model_fields)
