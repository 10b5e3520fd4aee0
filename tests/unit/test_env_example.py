"""`.env.example` documents every setting the code reads, and nothing it does not, one section
of the settings under each of its headings; its example values are ones the settings accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from oms.settings import SECTIONS, Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
# Read by prometheus_client itself, not by our settings.
NOT_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR"}
VARIABLE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]+)=(\S*)")


def documented() -> dict[str, tuple[str, str]]:
    """Each variable of `.env.example`: the heading it is listed under and its example value."""
    variables: dict[str, tuple[str, str]] = {}
    heading = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("# --- "):
            heading = line
        elif match := VARIABLE.match(line):
            name, value = match.groups()
            assert name not in variables, f"{name} is listed twice"
            if name not in NOT_SETTINGS:
                variables[name] = (heading, value)
    return variables


def section_of(name: str) -> type[BaseSettings]:
    (section,) = [section for section in SECTIONS if name in section.model_fields]
    return section


def test_env_example_lists_every_field_of_every_section() -> None:
    fields = [name for section in SECTIONS for name in section.model_fields]
    assert len(fields) == len(set(fields)), "a variable belongs to two sections"
    assert set(documented()) == set(fields) == set(Settings.model_fields)


def test_each_heading_lists_one_whole_section() -> None:
    headings: dict[type[BaseSettings], set[str]] = {}
    sections: dict[str, set[type[BaseSettings]]] = {}
    for name, (heading, _) in documented().items():
        headings.setdefault(section_of(name), set()).add(heading)
        sections.setdefault(heading, set()).add(section_of(name))
    assert {s.__name__: h for s, h in headings.items() if len(h) > 1} == {}
    assert {h: {s.__name__ for s in ss} for h, ss in sections.items() if len(ss) > 1} == {}


@pytest.mark.parametrize("section", SECTIONS, ids=lambda section: section.__name__)
def test_each_section_reads_its_documented_variables(
    section: type[BaseSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every example value set in the environment, under the name `.env.example` gives it, is
    read (and accepted) by exactly the section that owns the name."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    examples = {name: value for name, (_, value) in documented().items() if value}
    for name, value in examples.items():
        monkeypatch.setenv(name, value)
    read = section(_env_file=None)
    assert read.model_fields_set == set(examples) & set(section.model_fields)
