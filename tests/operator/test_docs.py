"""docs/operator.md shows what the code does: its scaling table is recomputed here."""

from __future__ import annotations

from oms_operator.config import OperatorConfig
from oms_operator.scaling import ScalingPolicy, render_table, simulate
from tests.operator.crd import ROOT, openapi_schema

DOC = ROOT / "docs" / "operator.md"
# minReplicas 1, maxReplicas 10, messagesPerReplica 20, as the text above the table says.
POLICY = ScalingPolicy(1, 10, 20, scale_down_window=60, fallback_replicas=3)
DEPTHS = [0, 45, 130, 400, 260, 90, 30, 0, 0, 0, 0, 0, 25, None, None, None, None, 15]


def test_the_documented_scaling_table_is_what_the_plan_computes() -> None:
    text = DOC.read_text()
    documented = text.split("<!-- scaling-table:begin -->")[1].split("<!-- scaling-table:end -->")[
        0
    ]
    series = [(15.0 * index, depth) for index, depth in enumerate(DEPTHS)]
    assert documented.strip() == render_table(simulate(POLICY, series, initial=1))


def test_every_spec_field_is_documented() -> None:
    text = DOC.read_text()
    spec = openapi_schema()["properties"]["spec"]["properties"]
    for section in ("jwt", "workers", "rabbitmq"):
        for field in spec[section]["properties"]:
            assert f"`{field}`" in text, f"spec.{section}.{field} is not documented"


def test_every_operator_setting_is_documented() -> None:
    text = DOC.read_text()
    for name in OperatorConfig.model_fields:
        assert f"`OPERATOR_{name}`" in text, f"OPERATOR_{name} is not documented"
