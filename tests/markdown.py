"""Reading the repository's Markdown documents in tests."""

from __future__ import annotations

import re


def heading_anchors(markdown: str) -> set[str]:
    """The `#anchor` of every heading, spelled as GitHub renders it."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 -]", "", title).replace(" ", "-"))
    return anchors
