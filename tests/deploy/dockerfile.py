"""A small Dockerfile reader: instructions per stage, and the settings a target's image ends up
with (ENV, CMD, USER, EXPOSE, STOPSIGNAL, LABEL, HEALTHCHECK), following `FROM <stage>`
inheritance."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Image:
    """What `docker run` of the final stage starts with."""

    stages: list[Stage]
    env: dict[str, str]
    cmd: list[str]
    entrypoint: list[str]
    user: str | None
    exposed: set[int]
    stop_signal: str | None
    labels: dict[str, str]
    healthcheck: str | None
    chain: list[Stage]

    @property
    def command(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    result: list[tuple[str, str]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _pairs(rest: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for token in shlex.split(rest):
        key, _, value = token.partition("=")
        pairs[key] = value
    return pairs


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"not an exec-form array: {rest}")
    return value


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def parse(path: Path, target: str | None = None) -> Image:
    """The image of stage `target` (default: the last stage, what a build without --target
    makes)."""
    stages: list[Stage] = []
    for keyword, rest in instructions(path.read_text()):
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=parts[0]))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    by_name = {stage.name: stage for stage in stages if stage.name}
    chain = [by_name[target] if target else stages[-1]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    env: dict[str, str] = {}
    cmd: list[str] = []
    entrypoint: list[str] = []
    user: str | None = None
    exposed: set[int] = set()
    stop_signal: str | None = None
    labels: dict[str, str] = {}
    healthcheck: str | None = None
    for stage in chain:
        for keyword, rest in stage.instructions:
            if keyword == "ENV":
                for key, value in _pairs(rest).items():
                    env[key] = _expand(value, env)
            elif keyword == "CMD":
                cmd = _exec_form(rest)
            elif keyword == "ENTRYPOINT":
                entrypoint, cmd = _exec_form(rest), []
            elif keyword == "USER":
                user = rest
            elif keyword == "EXPOSE":
                exposed |= {int(port.split("/")[0]) for port in rest.split()}
            elif keyword == "STOPSIGNAL":
                stop_signal = rest
            elif keyword == "LABEL":
                labels.update(_pairs(rest))
            elif keyword == "HEALTHCHECK":
                healthcheck = rest
    return Image(
        stages, env, cmd, entrypoint, user, exposed, stop_signal, labels, healthcheck, chain
    )
