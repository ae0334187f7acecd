"""The docs stay true to the code: every command, option, config key and module is documented.

Each test lists everything missing at once, so one run tells the whole story.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

import monitor
from monitor.alerts import CHANNEL_TYPES
from monitor.cli import cli
from monitor.config import Brand, Rule, Settings
from monitor.rules.conditions import REGISTRY
from monitor.sources import SOURCE_TYPES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = Path(monitor.__file__).resolve().parent
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def read(name: str) -> str:
    path = DOCS / name
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing")
    return path.read_text(encoding="utf-8")


def commands(
    command: click.Command = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand of the click group, depth first, the root as ()."""
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from commands(command.commands[name], (*path, name))


def shown(path: tuple[str, ...]) -> str:
    return " ".join(("monitor", *path))


def long_options(command: click.Command) -> list[str]:
    return sorted(
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
        if opt.startswith("--")
    )


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) for every markdown heading; `#` lines inside fenced code are not headings."""
    found: list[tuple[str, list[str]]] = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else HEADING.match(line)
        if match:
            found.append((match.group(2), []))
        elif found:
            found[-1][1].append(line)
    return [(heading, "\n".join(body)) for heading, body in found]


def command_section(text: str, path: tuple[str, ...]) -> str | None:
    """The body under the heading that names `monitor <path>` in backticks."""
    wanted = re.compile(r"`" + re.escape(shown(path)) + r"(?:`| [^`]*`)")
    for heading, body in sections(text):
        if wanted.search(heading):
            return body
    return None


def test_every_command_is_documented() -> None:
    text = read("cli.md")
    missing = [
        shown(path) for path, _ in commands() if not re.search(r"`" + re.escape(shown(path)) + r"[` ]", text)
    ]
    assert not missing, "docs/cli.md does not mention these commands as `monitor ...`: " + ", ".join(missing)
    no_heading = [shown(path) for path, _ in commands() if command_section(text, path) is None]
    assert not no_heading, "docs/cli.md has no heading (e.g. `## `monitor x``) for: " + ", ".join(no_heading)


def test_every_option_is_documented() -> None:
    text = read("cli.md")
    missing = []
    for path, command in commands():
        options = long_options(command)
        section = command_section(text, path)
        if section is None:
            missing.extend(f"{shown(path)} {opt} (no section for the command)" for opt in options)
            continue
        missing.extend(
            f"{shown(path)} {opt}" for opt in options if not re.search(re.escape(opt) + r"(?![\w-])", section)
        )
    assert not missing, "docs/cli.md does not document these options in their command's section:\n  " + (
        "\n  ".join(missing)
    )


def model_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def config_keys() -> dict[str, list[str]]:
    """Config key -> where it comes from (for the failure message)."""
    models: list[tuple[str, type[BaseModel]]] = [
        ("top level", Settings),
        ("brands[]", Brand),
        ("rules[]", Rule),
    ]
    models += [(f"sources[] type {name}", cls.Config) for name, cls in SOURCE_TYPES.items()]
    models += [(f"channels type {name}", model) for name, model in CHANNEL_TYPES.items()]
    keys: dict[str, list[str]] = {}
    for where, model in models:
        for key in model_keys(model):
            keys.setdefault(key, []).append(where)
    for name in REGISTRY:
        keys.setdefault(name, []).append("rule condition")
    return keys


def test_every_config_key_is_documented() -> None:
    text = read("configuration.md")
    keys = config_keys()
    assert "from" in keys, "the email channel's `from` alias was not collected"
    missing = [
        f"`{key}` ({', '.join(where)})" for key, where in sorted(keys.items()) if f"`{key}`" not in text
    ]
    assert not missing, "docs/configuration.md does not mention these config keys in backticks:\n  " + (
        "\n  ".join(missing)
    )


def modules() -> list[tuple[str, str]]:
    """(repository path, dotted name) of every Python file of the package."""
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in file.parts:
            continue
        relative = file.relative_to(PACKAGE.parent)
        parts = relative.with_suffix("").parts
        dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((relative.as_posix(), dotted))
    return found


def test_architecture_mentions_every_module() -> None:
    text = read("architecture.md")
    found = modules()
    assert len(found) > 10, f"expected the package's modules under {PACKAGE}, found {found}"
    missing = [
        path
        for path, dotted in found
        if path not in text
        and not (
            dotted != "monitor" and re.search(r"(?<![\w./])" + re.escape(dotted) + r"(?![\w/]|\.\w)", text)
        )
    ]
    assert not missing, (
        "docs/architecture.md does not mention these modules (by path or dotted name):\n  "
        + ("\n  ".join(missing))
    )


def names_a_command(words: list[str]) -> bool:
    """Walk the click tree: group names must resolve; words after a plain command are arguments."""
    command: click.Command = cli
    for word in words:
        if not isinstance(command, click.Group):
            return True
        if word not in command.commands:
            return False
        command = command.commands[word]
    return True


def test_docs_name_only_existing_commands() -> None:
    """A backticked `monitor xyz` names a real command, unless its paragraph says it is planned."""
    wrong = []
    for page in sorted(DOCS.glob("*.md")):
        for paragraph in re.split(r"\n\s*\n", page.read_text(encoding="utf-8")):
            if "planned" in paragraph.lower():
                continue
            for match in re.finditer(r"`(monitor(?: [a-z][a-z-]*)+)", paragraph):
                if not names_a_command(match.group(1).split()[1:]):
                    wrong.append(f"{page.name}: `{match.group(1)}`")
    assert not wrong, "the docs name commands that do not exist:\n  " + "\n  ".join(sorted(set(wrong)))
