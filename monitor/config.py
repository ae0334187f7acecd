"""YAML config -> frozen, validated settings.

Resolution: `--config PATH`, else `$MONITOR_CONFIG`, else `./monitor.yaml`. `${VAR}` pulls a value
from the environment (`${VAR:-default}` when it may be unset). Every error names the file, the key
path (e.g. `sources[1].every`) and what was expected.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from monitor.alerts import CHANNEL_TYPES, ChannelConfig
from monitor.confbase import Duration, Frozen, Severity
from monitor.errors import ConfigError
from monitor.sources import SOURCE_TYPES, SourceConfig

DEFAULT_PATH = "monitor.yaml"
DEFAULT_DATABASE = "sqlite:///monitor.db"
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

if TYPE_CHECKING:  # the real unions are built from the registries below
    SourceSettings = SourceConfig
    ChannelSettings = ChannelConfig
else:
    SourceSettings = Annotated[
        Union[tuple(cls.Config for cls in SOURCE_TYPES.values())],  # noqa: UP007 - built from the registry
        Field(discriminator="type"),
    ]
    ChannelSettings = Annotated[
        Union[tuple(CHANNEL_TYPES.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


class Brand(Frozen):
    """A brand and the words that name it. Exclusions win over aliases."""

    name: str = Field(min_length=1)
    aliases: tuple[str, ...] = ()
    handles: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @field_validator("handles")
    @classmethod
    def _at_handles(cls, handles: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            h if h.startswith("@") else f"@{h}" for h in (h.strip() for h in handles) if h.strip("@")
        )


class Rule(Frozen):
    """A per-post rule: when its condition tree matches, the mention is flagged."""

    name: str = Field(min_length=1, max_length=100)
    severity: Severity = "medium"
    when: dict[str, Any]
    notify: tuple[str, ...] = ()
    cooldown: Duration | None = None
    brands: tuple[str, ...] = ()
    enabled: bool = True
    description: str | None = None


class Settings(Frozen):
    database: str = DEFAULT_DATABASE
    brands: tuple[Brand, ...] = Field(min_length=1)
    sources: tuple[SourceSettings, ...] = ()
    rules: tuple[Rule, ...] | None = None
    rules_files: tuple[str, ...] = ()
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    languages: tuple[str, ...] = ("fr", "en")
    retention_days: int | None = Field(default=None, gt=0)
    auto_resolve: bool = False  # resolve a case when its author's follow-up is clearly happy
    poll_jitter: Duration = timedelta(seconds=30)

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        brand_names = {b.name for b in self.brands}
        seen: set[str] = set()
        for i, source in enumerate(self.sources):
            if source.name in seen:
                raise _PathError(f"sources[{i}].name", f"duplicate source name {source.name!r}")
            seen.add(source.name)
            for j, brand in enumerate(source.brands):
                if brand not in brand_names:
                    raise _PathError(f"sources[{i}].brands[{j}]", _unknown("brand", brand, brand_names))
        for i, rule in enumerate(self.rules or ()):
            for j, channel in enumerate(rule.notify):
                if channel not in self.channels:
                    raise _PathError(f"rules[{i}].notify[{j}]", _unknown("channel", channel, self.channels))
            for j, brand in enumerate(rule.brands):
                if brand not in brand_names:
                    raise _PathError(f"rules[{i}].brands[{j}]", _unknown("brand", brand, brand_names))
        return self

    @property
    def sqlite(self) -> bool:
        return self.database.startswith("sqlite")


class _PathError(ValueError):
    """A cross-reference error that knows its key path (pydantic only knows the model's)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _unknown(kind: str, name: str, known: Any) -> str:
    listed = ", ".join(sorted(known)) or "none defined"
    return f"unknown {kind} {name!r}; known: {listed}"


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the config is read from: explicit path, else $MONITOR_CONFIG, else ./monitor.yaml."""
    return Path(explicit or os.environ.get("MONITOR_CONFIG") or DEFAULT_PATH)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate the config file; raise ConfigError naming what is wrong."""
    file = config_path(path)
    shown = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "config file not found (create one with `monitor init`, or pass --config PATH)", file=shown
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", file=shown) from exc
    raw = _parse_yaml(text, shown)
    return settings_from_dict(raw, file=shown, env=os.environ if env is None else env, base_dir=file.parent)


def settings_from_dict(
    raw: Any, *, file: str = "<config>", env: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"expected a mapping of settings at the top level, got {type(raw).__name__}", file=file
        )
    raw = _interpolate(raw, env if env is not None else os.environ, file, "")
    raw = _with_rules_files(raw, file, env if env is not None else os.environ, base_dir or Path("."))
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, raw, file) from None
    _validate_rule_conditions(settings, file)
    return settings


def _parse_yaml(text: str, file: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {where}{problem}", file=file) from None


def _interpolate(node: Any, env: Mapping[str, str], file: str, path: str) -> Any:
    if isinstance(node, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            value = env.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    raise ConfigError(
                        f"environment variable {name} is not set "
                        f"(export it, or write ${{{name}:-}} to make it optional)",
                        file=file,
                        path=path or None,
                    )
                return default
            return value

        return _ENV_REF.sub(replace, node)
    if isinstance(node, dict):
        return {key: _interpolate(value, env, file, _join(path, key)) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, env, file, f"{path}[{i}]") for i, value in enumerate(node)]
    return node


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _with_rules_files(
    raw: dict[str, Any], file: str, env: Mapping[str, str], base_dir: Path
) -> dict[str, Any]:
    """Append the rules of each `rules_files:` entry (paths relative to the config file)."""
    files = raw.get("rules_files")
    if not files:
        return raw
    if not isinstance(files, list):
        raise ConfigError("expected a list of file paths", file=file, path="rules_files")
    rules = list(raw.get("rules") or [])
    for i, name in enumerate(files):
        rules_path = base_dir / str(name)
        try:
            loaded = _parse_yaml(rules_path.read_text(encoding="utf-8"), str(rules_path))
        except OSError as exc:
            raise ConfigError(f"cannot read rules file: {exc}", file=file, path=f"rules_files[{i}]") from None
        if isinstance(loaded, dict):
            loaded = loaded.get("rules")
        if not isinstance(loaded, list):
            raise ConfigError(
                "expected a list of rules (or a mapping with a `rules:` list)", file=str(rules_path)
            )
        rules.extend(_interpolate(loaded, env, str(rules_path), "rules"))
    return {**raw, "rules": rules}


def _config_error(exc: ValidationError, raw: Any, file: str) -> ConfigError:
    lines = []
    first_path = None
    for error in exc.errors(include_url=False):
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _PathError):
            path, message = ctx_error.path, ctx_error.message
        else:
            path, message = _format_loc(error["loc"], raw), _format_message(error)
        first_path = first_path or path
        lines.append(f"{path}: {message}" if path else message)
    if len(lines) == 1:
        return ConfigError(
            lines[0].split(": ", 1)[-1] if first_path else lines[0], file=file, path=first_path
        )
    return ConfigError(f"{len(lines)} errors:\n  " + "\n  ".join(lines), file=file)


def _format_loc(loc: tuple[Any, ...], raw: Any) -> str:
    """`('sources', 1, 'rss', 'every')` -> `sources[1].every`: union tags are not in the file, skip them."""
    parts: list[str] = []
    node = raw
    for i, key in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(key, int) and isinstance(node, list) and key < len(node):
            parts.append(f"[{key}]")
            node = node[key]
        elif isinstance(node, dict) and key not in node and node.get("type") == key:
            continue  # the discriminator tag pydantic inserts for `type:` unions
        elif isinstance(node, dict) and key in node:
            parts.append(f".{key}" if parts else str(key))
            node = node[key]
        elif last or not isinstance(node, dict):
            parts.append(f"[{key}]" if isinstance(key, int) else (f".{key}" if parts else str(key)))
            node = None
        # else: a discriminator tag pydantic inserted; the file has no such key.
    return "".join(parts)


def _format_message(error: Any) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see docs/configuration.md for the accepted keys)"
    if kind == "too_short":
        least = (error.get("ctx") or {}).get("min_length", 1)
        return f"expected at least {least} entr{'y' if least == 1 else 'ies'}"
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {}).get("tag")
        expected = (error.get("ctx") or {}).get("expected_tags")
        return f"unknown type {tag!r}; known types: {expected}"
    if kind == "union_tag_not_found":
        return "missing `type:` (see docs/configuration.md for the source and channel types)"
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _validate_rule_conditions(settings: Settings, file: str) -> None:
    from monitor.rules.conditions import validate_condition

    for i, rule in enumerate(settings.rules or ()):
        validate_condition(rule.when, path=f"rules[{i}].when", file=file)
