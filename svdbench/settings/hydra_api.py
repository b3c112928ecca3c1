"""Every use of Hydra's and OmegaConf's private or internal API in svdbench, in one place.

svdbench relies on a few things Hydra does not promise to keep: its command-line parser, its override
parser, the global state a composition sets up (GlobalHydra, the job runtime), its basic sweeper and
`run_job`, and OmegaConf's raw nodes. Each is wrapped here, and tests/test_hydra_api.py pins the behaviour
svdbench relies on: a Hydra or OmegaConf upgrade that changes one fails a test, not a sweep. Hydra's public
API (`hydra.main`, `compose`, `initialize_config_dir`, `HydraConfig`, callbacks, `OmegaConf.*`) is used
where it is needed; its `hydra.core` imports are re-exported from here too, so that this module lists all
of them.

version_base: Hydra 1.3.5+ warns when it is omitted (Hydra 1.1's defaults), and Hydra 1.4 warns when it is
given (it is deprecated, removed in 1.5). `VERSION_BASE` gives the value that is silent on the installed
Hydra: "1.3" before 1.4, nothing from 1.4 on (docs/design.md, "Hydra and its upgrades").
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import hydra.core.utils
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig

__all__ = [
    "VERSION_BASE",
    "BasicSweeper",
    "ConfigStore",
    "HydraConfig",
    "JobReturn",
    "JobStatus",
    "Override",
    "Plugins",
    "compose_aside",
    "configure_log",
    "filter_overrides",
    "is_none_node",
    "parse_argv",
    "parse_override",
    "raw_value",
    "replace_save_config",
    "run_job",
    "setup_globals",
]


def _hydra_version() -> tuple[int, int]:
    major, minor, *_ = (hydra.__version__.split(".") + ["0", "0"])[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


# The keyword arguments of hydra.main / initialize_config_dir that select Hydra's current behaviour without a
# warning: version_base="1.3" on Hydra 1.3 (omitting it warns and selects 1.1's defaults), nothing on 1.4+
# (where an explicit version_base warns).
VERSION_BASE: dict[str, Any] = {"version_base": "1.3"} if _hydra_version() < (1, 4) else {}

# Hydra's deprecation notice when conf/hydra/ has a file named like one of its own schemas (conf/hydra/*/basic.yaml
# replaces Hydra's basic sweeper and launcher by name): not the user's concern, filtered where Hydra composes.
SCHEMA_MATCH = "(?s).*is validated against ConfigStore schema"


def parse_argv(argv: list[str]) -> Any:
    """Hydra's own reading of a command line (flags and overrides: .overrides, .multirun, .help, .hydra_help,
    .info, .cfg, .config_path, .config_dir, .config_name, .experimental_rerun), or None where argparse refuses
    it (Hydra then prints its usage message itself)."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return get_args_parser().parse_args(argv)
    except SystemExit:
        return None


def parse_override(arg: str) -> Override:
    """One command-line override as Hydra reads it (raises on a line Hydra cannot parse)."""
    return OverridesParser.create().parse_override(arg)


@contextlib.contextmanager
def _aside() -> Iterator[None]:
    """Set a running Hydra (a sweep checking a job's settings) aside, and restore it after, untouched: its
    GlobalHydra and its job's name in the JobRuntime, which a composition replaces."""
    running = Singleton._instances.pop(GlobalHydra, None)
    runtime = JobRuntime.instance() if JobRuntime in Singleton._instances else None
    job_name = runtime.conf.get("name") if runtime is not None else None
    try:
        yield
    finally:
        if running is not None:
            Singleton._instances[GlobalHydra] = running
        if runtime is not None and job_name is not None:
            runtime.set("name", job_name)


def running_job_name() -> str | None:
    """The job name of the Hydra that is running in this process (None outside one)."""
    if JobRuntime not in Singleton._instances:
        return None
    name = JobRuntime.instance().conf.get("name")
    return None if name is None else str(name)


def compose_aside(config_dir: str, config_name: str, overrides: list[str]) -> DictConfig:
    """Hydra's composition of `overrides` (with the hydra node), without disturbing a Hydra that is running in
    this process: it is set aside meanwhile and restored after."""
    job_name = running_job_name()
    with _aside():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=SCHEMA_MATCH, category=UserWarning)
            with initialize_config_dir(config_dir=config_dir, job_name=job_name or "app", **VERSION_BASE):
                return compose(config_name, overrides=overrides, return_hydra_config=True)


def replace_save_config(save: Callable[[Any, str, Path], None]) -> None:
    """Make Hydra write a run's .hydra/ files (config.yaml, hydra.yaml, overrides.yaml) with `save(cfg, filename,
    output_dir)` instead of its own `_save_config`: `run_job` looks that name up in hydra.core.utils at every
    call (tests/test_hydra_api.py pins it)."""
    hydra.core.utils._save_config = save  # type: ignore[assignment]


def is_none_node(cfg: DictConfig) -> bool:
    """Whether a config node is null, without resolving it."""
    return bool(cfg._is_none())


def raw_value(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted key as written, without resolving interpolations ("${model.height}"); a group
    comes back as its DictConfig. KeyError where there is no such key."""
    node: Any = cfg
    for part in key.split("."):
        child = node._get_node(part) if isinstance(node, DictConfig) else None
        if child is None:
            raise KeyError(key)
        node = child
    return node if isinstance(node, DictConfig) else node._value()
