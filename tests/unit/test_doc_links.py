"""Every relative link in the project's Markdown points at a file that exists, and every
`#anchor` at a heading of that file (GitHub's anchor rules), so moved or renamed sections and
files break a test instead of a reader's click."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [
        REPO / "README.md",
        *REPO.glob("docs/*.md"),
        *REPO.glob("*/README.md"),
        *REPO.glob("*/*/README.md"),
    ]
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens; headings
    inside fenced code blocks are not headings."""
    found = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return found


def links(document: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
    return [
        target
        for target in LINK.findall(text)
        if not re.match(r"[a-z]+:", target)  # http:, https:, mailto:
    ]


def test_the_documents_are_found() -> None:
    names = {str(path.relative_to(REPO)) for path in DOCUMENTS}
    assert {"README.md", "docs/kubernetes.md", "charts/oms/README.md"} <= names


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for target in links(document):
        path, _, anchor = target.partition("#")
        destination = (document.parent / path).resolve() if path else document
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif (
            anchor
            and destination.suffix == ".md"
            and anchor not in anchors(destination.read_text())
        ):
            broken.append(f"{target}: no such heading in {destination.relative_to(REPO)}")
    assert broken == []


def test_the_anchor_rules_are_githubs() -> None:
    assert anchors("## The local cluster (`make cluster`)\n") == {"the-local-cluster-make-cluster"}
    assert anchors("### The API server's side (`tests/cluster`)\n") == {
        "the-api-servers-side-testscluster"
    }
    assert anchors("```bash\n# not a heading\n```\n") == set()
