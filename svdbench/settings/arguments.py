"""The command line, checked before Hydra creates anything: one clear paragraph per problem, exit status 2.

`check_command_line(argv)` reads the arguments as Hydra will (its own argument parser and override
parser), checks every setting name and every group option, and for a single run composes the config
with Hydra's compose API and validates it with the typed schema (`to_run_config`), so that a wrong value
stops the run before an output directory exists, whatever form the override took (`key=value`,
`+key=value`, `group=option`, `--cfg job`). `job_problem(overrides)` does the same for one job of a
multirun. No torch here: this runs at every start.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from svdbench.settings.config import (
    ConfigError,
    RunConfig,
    lookup,
    register_configs,
    settings,
    show,
    to_run_config,
    unknown_setting_message,
)
from svdbench.settings.hydra_api import SCHEMA_MATCH as SCHEMA_MATCH  # the entry filters Hydra's notice with it
from svdbench.settings.hydra_api import Override, compose_aside, parse_argv, parse_override

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
CONFIG_NAME = "config"
HELP = "python -m svdbench --help lists every group and setting."

register_configs()


def groups() -> dict[str, list[str]]:
    """The config groups of conf/ (not Hydra's own) and their options: {"model": ["small", "svd", ...], ...}."""
    return {
        p.name: sorted(o.stem for o in p.glob("*.yaml"))
        for p in sorted(CONF_DIR.iterdir())
        if p.is_dir() and p.name != "hydra"
    }


def _optional_groups() -> set[str]:
    """Groups whose default in conf/config.yaml is null (experiment): leaving them out selects none."""
    found = set()
    for line in (CONF_DIR / f"{CONFIG_NAME}.yaml").read_text().splitlines():
        match = re.match(r"\s*-\s*([\w/]+)\s*:\s*null\b", line)
        if match:
            found.add(match.group(1))
    return found


def unknown_setting(args: list[str]) -> str | None:
    """A message for the first `key=value` argument (also `+key=value`, `++key=value`, `~key`) naming a setting
    that does not exist, listing the settings that do; None if every name exists. Group choices
    (`model=xt`, `+experiment=guide`) and Hydra's own settings (`hydra.*`, `hydra/launcher=...`) are left
    to Hydra and to the other checks."""
    group_names = set(groups())
    for arg in args:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        key = arg.split("=", 1)[0].lstrip("+~")
        key = key.split("@", 1)[0]
        if not key or key == "hydra" or key.startswith("hydra.") or "/" in key or key in group_names:
            continue
        problem = unknown_setting_message(key, arg)
        if problem:
            return problem
    return None


def check_command_line(argv: list[str]) -> str | None:
    """The problem with `python -m svdbench ARGV` as one paragraph, or None when Hydra may go ahead.

    Flags that print something else than a run (--help, --hydra-help, --info, --version, shell completion)
    are left alone. A multirun (-m, or an experiment that sets hydra.mode=MULTIRUN) is checked for what
    every job shares (setting names, group options, the values given once); its jobs are checked one by
    one with `job_problem` when the sweep starts them.
    """
    if any(arg in ("--version", "--shell-completion", "-sc") for arg in argv):
        return None
    args = _parse_argv(argv)
    if args is None or args.help or args.hydra_help or args.info or args.experimental_rerun:
        return None
    if args.config_path or args.config_dir:  # another config directory: only Hydra knows what it holds
        return unknown_setting(args.overrides)
    return _problem(list(args.overrides), multirun=bool(args.multirun), config_name=args.config_name or CONFIG_NAME)


def job_problem(overrides: list[str]) -> str | None:
    """The problem with one job of a multirun (its overrides), the same message a single run would give,
    or None when the job's config composes and validates."""
    return _problem(list(overrides), multirun=False, config_name=CONFIG_NAME, job=True)


# Hydra's output locations: an empty value would mean the current directory, which is never a run's own.
OUTPUT_DIRS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir")


def _output_dir_problem(override: Override) -> str | None:
    if override.key_or_group not in OUTPUT_DIRS or override.is_sweep_override() or override.is_delete():
        return None
    value = override.value()
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return (
            f"{override.input_line}: an empty output directory is not a directory: svdbench would write into the "
            f"current directory, among files that are not its own. Give {override.key_or_group} a directory (a new "
            "or empty one), or leave the setting out: the default is a new directory for every run."
        )
    return None


def _parse_argv(argv: list[str]) -> Any:
    """Hydra's own reading of the command line (flags and overrides), or None where argparse refuses it:
    Hydra then prints its usage message itself."""
    return parse_argv(argv)


def _problem(overrides: list[str], multirun: bool, config_name: str, job: bool = False) -> str | None:
    parsed: list[Override] = []
    for arg in overrides:
        try:
            parsed.append(parse_override(arg))
        except Exception as exc:
            return (
                f"{arg}: this argument cannot be read: {_one_line(exc)}. Arguments are key=value (a setting), "
                f"group=option (a preset) or -m for a sweep; quote values with spaces or special characters "
                f"(key='a value'). {HELP}"
            )
    problem = unknown_setting(overrides)
    if problem:
        return problem
    for override in parsed:
        problem = _output_dir_problem(override) or _group_problem(override)
        if problem:
            return problem
    sweeps = [o for o in parsed if o.is_sweep_override()]
    single = [_line(o) for o in parsed if not o.is_sweep_override()]
    try:
        cfg = _compose(config_name, single)
    except Exception as exc:
        return _composition_problem(exc, parsed)
    multirun = multirun or (not job and str(OmegaConf.select(cfg, "hydra.mode")) == str(RunMode.MULTIRUN))
    if sweeps and not multirun:
        return _sweep_without_multirun(sweeps[0])
    if multirun:  # the values every job shares; each job's whole config is checked when it starts (job_problem)
        return _shared_value_problem(cfg, parsed)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        run_cfg = to_run_config(cfg)
    except ConfigError as exc:
        return str(exc)
    return _missing_package_problem(run_cfg)


def _missing_package_problem(cfg: RunConfig) -> str | None:
    """An optional package that a setting asks for by name and that is not installed: refused before the run,
    since it would otherwise measure without it (energy.source=zeus: svdbench.measure.energy)."""
    import importlib.util

    if cfg.energy.source == "zeus" and importlib.util.find_spec("zeus") is None:
        return (
            "energy.source=zeus: Zeus is not installed, so the energy figures you asked for could not be measured. "
            "Install it (pip install zeus), or use energy.source=auto (Zeus where installed, else NVML and RAPL "
            "directly) or energy.source=nvml."
        )
    return None


def _shared_value_problem(cfg: DictConfig, parsed: list[Override]) -> str | None:
    """In a multirun: a setting given one value on the command line has it in every job; check it now."""
    for override in parsed:
        if override.is_sweep_override() or override.is_delete() or override.is_hydra_override():
            continue
        info = lookup(override.key_or_group)
        if info is None or info.is_group:
            continue
        try:
            value = OmegaConf.select(cfg, info.key)
        except Exception:  # an interpolation the sweep's values may complete
            continue
        problem = info.problem(value)
        if problem:
            return problem
    return None


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    """Hydra's composition of `overrides`, with the Hydra node; a running Hydra (a sweep calling job_problem)
    is set aside meanwhile and restored after, untouched."""
    return compose_aside(str(CONF_DIR), config_name, overrides)


def run_config(overrides: list[str]) -> RunConfig:
    """The typed config a run of these overrides gets (composed as `check_command_line` composes it); for the
    tools that take a run's overrides without running it, such as the planner."""
    cfg = _compose(CONFIG_NAME, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    return to_run_config(cfg)


def _options_text(group: str, options: list[str]) -> str:
    return f"Available options in '{group}': {', '.join(options)} (conf/{group}/*.yaml)."


def _group_problem(override: Override) -> str | None:
    """Problems of a `group=option` argument Hydra reports badly or not at all."""
    group = override.key_or_group
    options = groups().get(group)
    if options is None or override.is_delete():
        return None
    given = _line(override)
    if override.value_type is not None and not override.is_sweep_override():
        value = override.value()
        if value is None:
            none = (
                f" To run without {group}, leave {group}=... out (or write ~{group})."
                if group in _optional_groups()
                else ""
            )
            return (
                f"{given} is not valid: `{group}` takes the name of one preset. {_options_text(group, options)}{none}"
            )
        if isinstance(value, list):
            names = [show(v) for v in value]
            return (
                f"{given} selects several {group} presets at once: Hydra would merge them into one config (named "
                f"after the last one) and run that once, without -m or with it. To compare them, sweep them: "
                f"python -m svdbench -m {group}={','.join(names)}."
            )
        values = [str(value)]
    elif override.is_sweep_override():
        values = _sweep_values(override) or []
    else:
        values = []
    for value in values:
        if value not in options:
            close = difflib.get_close_matches(value, options, n=1)
            return f"{given}: `{value}` is not a preset of `{group}`. {_options_text(group, options)}" + (
                f" Did you mean {group}={close[0]}?" if close else ""
            )
    return None


def _sweep_values(override: Override) -> list[str] | None:
    """The values a sweep override lists (a,b,c / choice() / range()), or None where they cannot be listed
    without Hydra (glob(), interval())."""
    try:
        return list(override.sweep_string_iterator())
    except Exception:
        return None


def _sweep_without_multirun(override: Override) -> str:
    given = _line(override)
    key = override.key_or_group
    values = ",".join(_sweep_values(override) or [])
    info = lookup(key)
    quote = (
        f", or quote it to mean one string: {key}='{values}'"
        if info is not None and not info.is_group and info.base_type is str
        else ""
    )
    return (
        f"{given} gives several values, which is a sweep (one run per value), but this is a single run. Add -m to "
        f"sweep them: python -m svdbench -m {given}{quote}."
    )


def _settings_of(group: str) -> list[str]:
    return [s.key for s in settings() if s.key.startswith(f"{group}.")]


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text.rstrip(".")


def _line(override: Override) -> str:
    """The argument as given; Override.input_line is Optional, but OverridesParser sets it on every override."""
    assert override.input_line is not None
    return override.input_line


def _find(parsed: list[Override], key: str) -> Override | None:
    for override in parsed:
        if override.key_or_group == key:
            return override
    return None


def _composition_problem(exc: Exception, parsed: list[Override]) -> str:
    """Hydra's composition error, as one paragraph that names the argument and says what is valid."""
    text = str(exc)
    cause = exc.__cause__
    full_key = getattr(cause, "full_key", None) or ""
    merging = re.match(r"Error merging override (.+)", text)
    if merging:
        given = merging.group(1).strip()
        key = given.split("=", 1)[0].lstrip("+~")
        info = lookup(full_key or key)
        if info is not None and not info.is_group:
            value = given.split("=", 1)[1] if "=" in given else ""
            default = show(info.default)
            example = "" if default == "???" else f" For example {info.key}={default} (the default)."
            return f"{info.key}={value} is not valid: {info.key} takes {info.valid_text()}. {info.help}{example}"
        if info is not None:
            options = groups().get(info.key)
            fix = (
                f"choose a preset: {_options_text(info.key, options)}"
                if options
                else f"set its settings one by one, e.g. {next(iter(_settings_of(info.key)))}=..."
            )
            return f"{given} is not valid: `{info.key}` is a group of settings, not one value; {fix} {HELP}"
        return f"{given} is not valid: {_one_line(cause or exc)}. {HELP}"
    if full_key and type(cause).__name__ == "ConfigKeyError":  # `bench={a:1}`: a key inside a dict value
        override = _find(parsed, full_key.split(".")[0])
        return unknown_setting_message(full_key, _line(override) if override else full_key) or _one_line(exc)
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        group, _, option = missing.group(1).rpartition("/")
        options = groups().get(group)
        override = _find(parsed, group)
        given = _line(override) if override else f"{group}={option}"
        if options is not None:
            close = difflib.get_close_matches(option, options, n=1)
            return f"{given}: `{option}` is not a preset of `{group}`. {_options_text(group, options)}" + (
                f" Did you mean {group}={close[0]}?" if close else ""
            )
        return f"{given}: Hydra cannot find the config '{missing.group(1)}': {_one_line(exc)}."
    appending = re.search(r"Could not append to config\. An item is already at '([^']+)'", text)
    if appending:
        key = appending.group(1)
        override = _find(parsed, key)
        given = _line(override) if override else f"+{key}=..."
        plain = given.lstrip("+")
        return f"{given}: `{key}` is already a setting, so the + (add a new key) does not apply: write {plain}."
    multiple = re.search(r"Multiple values for (\S+?)\.", text)
    if multiple:
        group = multiple.group(1)
        override = _find(parsed, group)
        given = _line(override) if override else f"+{group}=..."
        return (
            f"{given}: `{group}` is already in the defaults list (conf/{CONFIG_NAME}.yaml), so it is chosen without "
            f"the +: write {given.lstrip('+')}."
        )
    override = next((o for o in parsed if _line(o) in text), None)
    where = _line(override) if override else "The command line"
    return f"{where}: {_one_line(exc)}. {HELP}"
