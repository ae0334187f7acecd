"""`monitor init`: write the commented starter config (the bundled French telecom example)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from monitor.errors import ConfigError


def starter_config() -> str:
    return resources.files("monitor.data").joinpath("monitor.example.yaml").read_text(encoding="utf-8")


def write_starter_config(path: Path, *, force: bool = False) -> Path:
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists (pass --force to overwrite it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(starter_config(), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from None
    return path
