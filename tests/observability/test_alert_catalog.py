"""Every alert links a runbook section that exists, and is made to fire for real by some test
(tests/e2e/node/alert_catalog.py): fast, static checks over the rules, the runbooks and the
alert test modules' sources."""

from __future__ import annotations

import ast
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.node.alert_catalog import INDUCED_BY
from tests.observability.prometheus_server import ROOT, RULE_FILES

RUNBOOKS = ROOT / "docs" / "runbooks.md"
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def alert_rules() -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["alert"] not in rules, f"{rule['alert']} defined twice"
                    rules[rule["alert"]] = rule
    return rules


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: inline markup dropped, lower case, every character
    that is not a letter, digit, space, hyphen or underscore removed, spaces turned into
    hyphens (no collapsing)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    kept = "".join(
        char
        for char in text
        if char in " -_" or unicodedata.category(char)[0] in {"L", "N"} or char == "\u200d"
    )
    return kept.replace(" ", "-")


def sections(markdown: str) -> dict[str, str]:
    """Anchor -> the text of its section (up to the next heading of any level), headings in
    code blocks ignored, repeated anchors numbered `-1`, `-2` as GitHub does."""
    found: dict[str, str] = {}
    seen: dict[str, int] = {}
    current: str | None = None
    fenced = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading is None:
            if current is not None:
                found[current] += line + "\n"
            continue
        anchor = github_anchor(heading.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        current = anchor if count == 0 else f"{anchor}-{count}"
        found[current] = ""
    return found


def named_alerts(module: Path, alerts: set[str]) -> set[str]:
    """The alerts a test module names in its code (string literals), read without importing it."""
    tree = ast.parse(module.read_text(), str(module))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in alerts
    }


def test_github_anchors_follow_githubs_rules() -> None:
    assert github_anchor("OMS API error budget burn") == "oms-api-error-budget-burn"
    assert (
        github_anchor("`oms dlq` and the DLQ: replay, discard")
        == "oms-dlq-and-the-dlq-replay-discard"
    )
    assert github_anchor("Operator (Kopf) — scaling") == "operator-kopf--scaling"
    assert github_anchor("[Runbooks](runbooks.md) 2.0") == "runbooks-20"
    assert sections("# A\n```\n# not a heading\n```\n## A\nx\n") == {
        "a": "```\n# not a heading\n```\n",
        "a-1": "x\n",
    }


def test_every_alert_links_a_runbook_section_that_covers_it() -> None:
    runbooks = sections(RUNBOOKS.read_text())
    rules = alert_rules()
    assert len(rules) >= 17
    for name, rule in sorted(rules.items()):
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md", f"{name}: runbook_url {url}"
        assert anchor in runbooks, f"{name}: no heading with anchor #{anchor} in docs/runbooks.md"
        # The section a link lands on names the alert (shared sections name each of theirs).
        assert re.search(rf"`{name}`", runbooks[anchor]), f"{name}: #{anchor} does not name it"


def test_every_alert_is_induced_by_a_test() -> None:
    rules = set(alert_rules())
    assert set(INDUCED_BY) - rules == set(), "catalogued alerts that no rules file defines"
    assert rules - set(INDUCED_BY) == set(), (
        "alerts without an induction test: write one, and name its module for them in "
        "tests/e2e/node/alert_catalog.py"
    )
    for relative in sorted(set(INDUCED_BY.values())):
        module = ROOT / relative
        if not module.exists():
            pytest.fail(f"{relative} (named in alert_catalog.py) does not exist")
        catalogued = {name for name, owner in INDUCED_BY.items() if owner == relative}
        missing = catalogued - named_alerts(module, rules)
        assert not missing, (
            f"{relative} is catalogued as inducing {sorted(missing)} but never names them"
        )
