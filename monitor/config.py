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
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

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


class AggregateRule(Frozen):
    """A rule evaluated on a schedule over many mentions (volume, silence, complaint counts)."""

    name: str = Field(min_length=1, max_length=100)
    severity: Severity = "high"
    window: Duration = timedelta(hours=1)
    notify: tuple[str, ...] = ()
    cooldown: Duration | None = None  # default: the window
    brands: tuple[str, ...] = ()
    enabled: bool = True
    description: str | None = None

    @property
    def quiet_period(self) -> timedelta:
        """How long after an alert the same rule stays silent for the same brand or source."""
        return self.cooldown or self.window


class SpikeRule(AggregateRule):
    """Mentions of a brand in the last `window`, against the usual rate over `reference` before it."""

    type: Literal["spike"] = "spike"
    reference: Duration = timedelta(days=7)
    ratio: float = Field(default=3.0, ge=1.0)
    min_count: int = Field(default=10, ge=1)


class FlatlineRule(AggregateRule):
    """A source (a stalled collector) or a brand with no new mention for `window`."""

    type: Literal["flatline"] = "flatline"
    window: Duration = timedelta(hours=6)
    per: Literal["source", "brand"] = "source"
    sources: tuple[str, ...] = ()


class FrequencyRule(AggregateRule):
    """At least `count` flags (of `rules`, default all) for a brand within `window`."""

    type: Literal["frequency"] = "frequency"
    count: int = Field(ge=1)
    rules: tuple[str, ...] = ()


if TYPE_CHECKING:
    AggregateSettings = SpikeRule | FlatlineRule | FrequencyRule
else:
    AggregateSettings = Annotated[
        Union[SpikeRule, FlatlineRule, FrequencyRule],  # noqa: UP007
        Field(discriminator="type"),
    ]


class Settings(Frozen):
    database: str = DEFAULT_DATABASE
    brands: tuple[Brand, ...] = Field(min_length=1)
    sources: tuple[SourceSettings, ...] = ()
    rules: tuple[Rule, ...] | None = None
    rules_files: tuple[str, ...] = ()
    aggregates: tuple[AggregateSettings, ...] = ()
    channels: dict[str, ChannelSettings] = Field(default_factory=dict)
    languages: tuple[str, ...] = ("fr", "en")
    language_detection: Literal["accurate", "light"] = "light"
    embeddings: bool = True
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
        rule_names: set[str] = set()
        for i, rule in enumerate(self.rules or ()):
            if rule.name in rule_names:
                raise _PathError(f"rules[{i}].name", f"duplicate rule name {rule.name!r}")
            rule_names.add(rule.name)
            self._check_references(f"rules[{i}]", rule.notify, rule.brands, brand_names)
        if self.rules is None:
            from monitor.rules.engine import default_rules

            rule_names = {rule.name for rule in default_rules()}
        aggregate_names: set[str] = set()
        source_names = {s.name for s in self.sources}
        for i, aggregate in enumerate(self.aggregates):
            where = f"aggregates[{i}]"
            if aggregate.name in aggregate_names:
                raise _PathError(f"{where}.name", f"duplicate aggregate rule name {aggregate.name!r}")
            aggregate_names.add(aggregate.name)
            self._check_references(where, aggregate.notify, aggregate.brands, brand_names)
            if isinstance(aggregate, FlatlineRule):
                if aggregate.per == "brand" and aggregate.sources:
                    raise _PathError(f"{where}.sources", "`sources` needs `per: source`")
                if aggregate.per == "source" and aggregate.brands:
                    raise _PathError(f"{where}.brands", "`brands` needs `per: brand`")
                for j, name in enumerate(aggregate.sources):
                    if name not in source_names:
                        raise _PathError(f"{where}.sources[{j}]", _unknown("source", name, source_names))
            if isinstance(aggregate, FrequencyRule):
                for j, name in enumerate(aggregate.rules):
                    if name not in rule_names:
                        raise _PathError(f"{where}.rules[{j}]", _unknown("rule", name, rule_names))
        return self

    def _check_references(
        self, where: str, notify: tuple[str, ...], brands: tuple[str, ...], brand_names: set[str]
    ) -> None:
        for j, channel in enumerate(notify):
            if channel not in self.channels:
                raise _PathError(f"{where}.notify[{j}]", _unknown("channel", channel, self.channels))
        for j, brand in enumerate(brands):
            if brand not in brand_names:
                raise _PathError(f"{where}.brands[{j}]", _unknown("brand", brand, brand_names))

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
    raw, origins = _with_rules_files(raw, file, env if env is not None else os.environ, base_dir or Path("."))
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, raw, file, origins) from None
    _validate_rule_conditions(settings, file, origins)
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


# Where each rule of the merged `rules:` list was written: (file, key path of the rule in that file).
Origins = list[tuple[str, str]]


def _with_rules_files(
    raw: dict[str, Any], file: str, env: Mapping[str, str], base_dir: Path
) -> tuple[dict[str, Any], Origins]:
    """Append the rules of each `rules_files:` entry (paths relative to the config file)."""
    own = raw.get("rules")
    origins: Origins = [(file, f"rules[{i}]") for i in range(len(own) if isinstance(own, list) else 0)]
    files = raw.get("rules_files")
    if not files:
        return raw, origins
    if not isinstance(files, list):
        raise ConfigError("expected a list of file paths", file=file, path="rules_files")
    rules = list(raw.get("rules") or [])
    for i, name in enumerate(files):
        rules_path = base_dir / str(name)
        try:
            loaded = _parse_yaml(rules_path.read_text(encoding="utf-8"), str(rules_path))
        except OSError as exc:
            raise ConfigError(f"cannot read rules file: {exc}", file=file, path=f"rules_files[{i}]") from None
        prefix = "rules"
        if isinstance(loaded, dict):
            loaded = loaded.get("rules")
        else:
            prefix = ""
        if not isinstance(loaded, list):
            raise ConfigError(
                "expected a list of rules (or a mapping with a `rules:` list)", file=str(rules_path)
            )
        rules.extend(_interpolate(loaded, env, str(rules_path), prefix))
        origins.extend((str(rules_path), f"{prefix}[{j}]") for j in range(len(loaded)))
    return {**raw, "rules": rules}, origins


_RULE_PATH = re.compile(r"rules\[(\d+)\](.*)")


def _locate(
    path: str | None, message: str, file: str, raw: Any, origins: Origins
) -> tuple[str, str | None, str]:
    """A merged `rules[i]...` path back to the file and key path the rule was written at, and the
    rule's name added to the message."""
    match = _RULE_PATH.fullmatch(path or "")
    if not match or int(match.group(1)) >= len(origins):
        return file, path, message
    index = int(match.group(1))
    rule_file, rule_path = origins[index]
    rule = raw.get("rules", [])[index] if isinstance(raw, dict) else None
    name = rule.get("name") if isinstance(rule, dict) else None
    return rule_file, f"{rule_path}{match.group(2)}", f"{message} (rule {name!r})" if name else message


def _config_error(exc: ValidationError, raw: Any, file: str, origins: Origins | None = None) -> ConfigError:
    located = []
    for error in exc.errors(include_url=False):
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _PathError):
            path, message = ctx_error.path, ctx_error.message
        else:
            path, message = _format_loc(error["loc"], raw), _format_message(error)
        located.append(_locate(path or None, message, file, raw, origins or []))
    if len(located) == 1:
        ((where, only_path, only_message),) = located
        return ConfigError(only_message, file=where, path=only_path)
    lines = [
        ": ".join(part for part in (where if where != file else None, at, text) if part)
        for where, at, text in located
    ]
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


def _validate_rule_conditions(settings: Settings, file: str, origins: Origins | None = None) -> None:
    """Compile every rule's condition tree (disabled rules too); report every rule that fails."""
    from monitor.rules.conditions import validate_condition

    errors: list[ConfigError] = []
    for i, rule in enumerate(settings.rules or ()):
        rule_file, rule_path = origins[i] if origins and i < len(origins) else (file, f"rules[{i}]")
        try:
            validate_condition(rule.when, path=f"{rule_path}.when", file=rule_file)
        except ConfigError as exc:
            errors.append(ConfigError(f"{exc.message} (rule {rule.name!r})", file=exc.file, path=exc.path))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        lines = [
            ": ".join(part for part in (e.file if e.file != file else None, e.path, e.message) if part)
            for e in errors
        ]
        raise ConfigError(f"{len(lines)} errors:\n  " + "\n  ".join(lines), file=file)
