"""A finished run's settings, read back as the typed `RunConfig` the run itself had.

A run's directory keeps the config Hydra composed for it in `.hydra/config.yaml`. `load_saved` merges that
file onto the schema (`OmegaConf.structured(RunConfig)`, what the `run_schema` default of conf/config.yaml
does when the run composes it) and checks it with `to_run_config`, the run's own check; so the comparison,
the gate and the guide's claims read the same typed values, with the same defaults, as the run did. Settings
are named by their dotted keys on the command line (`compare --ignore max_guidance_scale`,
`--baseline opt.name=none`); `value_at` reads one off a typed config.

Records without `.hydra/config.yaml` (a job refused before it started, a directory copied without it) get
`from_values`: the schema's defaults with the values results.json kept (model, opt, dtype, shape, seed...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from svdbench.settings.config import ConfigError, RunConfig, lookup, settings, to_run_config

CONFIG_FILE = Path(".hydra") / "config.yaml"


def value_at(cfg: RunConfig, key: str) -> Any:
    """The value of the dotted setting `key` ("opt.compile.mode") of a typed config; KeyError if `key` names
    no setting of the schema (a group such as "opt" returns its dataclass)."""
    if lookup(key) is None:
        raise KeyError(key)
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def values(cfg: RunConfig) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every setting of `cfg`, in the schema's order."""
    for info in settings():
        yield info.key, value_at(cfg, info.key)


def _schema() -> DictConfig:
    return OmegaConf.structured(RunConfig)


def load_saved(path: Path) -> tuple[RunConfig, list[str]]:
    """The typed config of a finished run from its `.hydra/config.yaml` (`path`), and notes on what was left
    out: settings an older version had that the schema no longer has are dropped (and named in a note).
    Raises ConfigError when the file cannot be read or its values are not valid settings."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} cannot be read ({type(exc).__name__}: {exc}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a mapping of settings.")
    data.pop("hydra", None)
    dropped: list[str] = []
    _drop_unknown(data, RunConfig, "", dropped)
    try:
        cfg = OmegaConf.merge(_schema(), OmegaConf.create(data))
    except Exception as exc:  # a value of the wrong type for its setting
        raise ConfigError(f"{path}: {str(exc).splitlines()[0]}") from None
    assert isinstance(cfg, DictConfig)
    notes = [f"{path}: settings no longer in svdbench's schema were left out: {', '.join(dropped)}."] if dropped else []
    return to_run_config(cfg), notes


def _drop_unknown(data: dict[str, Any], cls: type, prefix: str, dropped: list[str]) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in list(data):
        if key not in fields:
            dropped.append(f"{prefix}{key}")
            del data[key]
            continue
        info = lookup(f"{prefix}{key}")
        if info is not None and info.is_group and isinstance(data[key], dict):
            _drop_unknown(data[key], info.hint, f"{prefix}{key}.", dropped)


def from_values(given: Mapping[str, Any]) -> RunConfig:
    """A typed config of the schema's defaults with the dotted settings in `given` set; the output shape
    defaults to the model's native one, as conf/config.yaml says.
    Raises ConfigError for a key that is no setting or a value that is not valid."""
    cfg = _schema()
    for key, value in given.items():
        if lookup(key) is None:
            raise ConfigError(f"{key} is not a setting of svdbench (python -m svdbench --help lists them).")
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except Exception as exc:  # a value of the wrong type for its setting
            raise ConfigError(f"{key}={value!r} is not valid: {str(exc).splitlines()[0]}") from None
    for key in ("height", "width", "num_frames"):
        if OmegaConf.is_missing(cfg, key):
            cfg[key] = cfg.model[key]
    return to_run_config(cfg)
