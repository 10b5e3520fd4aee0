"""Go-style durations ("90s", "15m", "1h30m", "720h"), as Kubernetes, KEDA and cert-manager use.

The CRD's pattern and CEL rules accept the same grammar, so a value the API server admits always
parses here.
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration; raises ValueError on anything else."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h30m or 720h")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
