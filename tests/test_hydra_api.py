"""What svdbench relies on in Hydra's and OmegaConf's private API (svdbench/settings/hydra_api.py), pinned: an
upgrade that changes any of it fails here, with the name of the behaviour, instead of in the middle of a sweep."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import hydra
import hydra.core.utils
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from svdbench.settings import hydra_api
from svdbench.settings.hydra_api import (
    VERSION_BASE,
    BasicSweeper,
    JobReturn,
    JobStatus,
    compose_aside,
    is_none_node,
    parse_argv,
    parse_override,
    raw_value,
    replace_save_config,
    run_job,
)

from .conftest import CONF_DIR


def test_the_installed_hydra_is_one_svdbench_knows():
    """docs/design.md ("Hydra and its upgrades"): 1.3 with version_base="1.3"; 1.4 without it; 1.5 is not known."""
    major, minor = (int(part) for part in hydra.__version__.split(".")[:2])
    assert (major, minor) in ((1, 3), (1, 4)), hydra.__version__
    assert VERSION_BASE == ({"version_base": "1.3"} if minor == 3 else {})


def test_version_base_is_chosen_so_that_hydra_does_not_warn():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
            compose("config", overrides=["logger=none"])
    assert not [str(w.message) for w in caught if "version_base" in str(w.message)]


def test_hydras_argv_parser_gives_the_fields_the_command_line_check_reads():
    args = parse_argv(["-m", "opt=none,compile", "seed=1", "--cfg", "job"])
    assert args.multirun is True and args.overrides == ["opt=none,compile", "seed=1"] and args.cfg == "job"
    for name in ("help", "hydra_help", "info", "config_path", "config_dir", "config_name", "experimental_rerun"):
        assert hasattr(args, name), name
    assert parse_argv(["--help"]).help is True and parse_argv(["--hydra-help"]).hydra_help is True
    assert parse_argv(["--info"]).info is not None
    assert parse_argv(["--cfg"]) is None  # argparse refuses it: Hydra prints its own usage


def test_the_override_parser_gives_what_the_checks_read():
    sweep = parse_override("opt=none,compile")
    assert sweep.key_or_group == "opt" and sweep.is_sweep_override()
    assert list(sweep.sweep_string_iterator()) == ["none", "compile"]
    assert sweep.input_line == "opt=none,compile"
    plain = parse_override("+cond.fps=3")
    assert not plain.is_sweep_override() and plain.value() == 3 and plain.value_type is not None
    assert parse_override("~experiment").is_delete() and parse_override("hydra.verbose=true").is_hydra_override()
    assert parse_override("opt=null").value() is None and parse_override("opt=[a,b]").value() == ["a", "b"]
    with pytest.raises(Exception):  # noqa: B017 (Hydra's own error type is what changes between versions)
        parse_override("opt=[a,")


def test_a_composition_leaves_a_running_hydra_untouched():
    """A sweep checks each job's settings (compose_aside) while its own Hydra is running."""
    with initialize_config_dir(config_dir=str(CONF_DIR), job_name="the_sweep", **VERSION_BASE):
        running = GlobalHydra.instance()
        from hydra.core.utils import JobRuntime

        JobRuntime.instance().set("name", "the_sweep")
        cfg = compose_aside(str(CONF_DIR), "config", ["seed=3"])
        assert cfg.seed == 3 and "hydra" in cfg  # the hydra node comes with it
        assert GlobalHydra.instance() is running and GlobalHydra.instance().is_initialized()
        assert JobRuntime.instance().conf.get("name") == "the_sweep"
        assert hydra_api.running_job_name() == "the_sweep"


def test_raw_values_are_read_without_resolving():
    cfg = OmegaConf.create({"height": "${model.height}", "model": {"height": 128, "path": None}, "opt": None})
    assert raw_value(cfg, "height") == "${model.height}" and raw_value(cfg, "model.height") == 128
    assert isinstance(raw_value(cfg, "model"), DictConfig) and raw_value(cfg, "model.path") is None
    with pytest.raises(KeyError):
        raw_value(cfg, "model.width")
    assert is_none_node(cfg._get_node("opt")) and not is_none_node(cfg.model)


def test_the_basic_sweeper_is_what_svdbenchs_sweeper_copies():
    """SweepSweeper.__init__ repeats BasicSweeper.__init__ (svdbench/sweep/plugins.py says why): the same
    arguments and the same attributes."""
    assert list(inspect.signature(BasicSweeper.__init__).parameters) == ["self", "max_batch_size", "params"]
    import sys

    # Hydra's plugin scan may have re-executed the module: its class by that name now is the one to call.
    sweeper = sys.modules[BasicSweeper.__module__].BasicSweeper(max_batch_size=None)
    assert set(vars(sweeper)) == {
        "overrides",
        "batch_index",
        "max_batch_size",
        "params",
        "hydra_context",
        "config",
        "launcher",
    }
    assert callable(BasicSweeper.validate_batch_is_legal) and callable(BasicSweeper.sweep)


def test_run_job_and_its_return_value():
    assert {"hydra_context", "task_function", "config", "job_dir_key", "job_subdir_key"} <= set(
        inspect.signature(run_job).parameters
    )
    ret = JobReturn(overrides=["a=1"], working_dir="/tmp", hydra_cfg=None)
    ret.status, ret.return_value = JobStatus.COMPLETED, (1.0, 2.0)
    assert ret.return_value == (1.0, 2.0) and ret.status is JobStatus.COMPLETED


def test_run_job_saves_the_config_through_the_name_svdbench_replaces(tmp_path):
    """run_job looks `_save_config` up in hydra.core.utils at every call, so replace_save_config takes effect."""
    assert "_save_config(" in inspect.getsource(run_job)
    original = hydra.core.utils._save_config
    seen: list[str] = []
    try:
        replace_save_config(lambda cfg, filename, output_dir: seen.append(filename))
        hydra.core.utils._save_config(OmegaConf.create({}), "config.yaml", Path(tmp_path))
    finally:
        replace_save_config(original)
    assert seen == ["config.yaml"] and hydra.core.utils._save_config is original


def test_hydra_warns_about_a_yaml_named_like_its_schema_as_svdbench_filters_it():
    """conf/hydra/launcher/basic.yaml is matched to Hydra's schema by name: the notice SCHEMA_MATCH filters."""
    import re

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with initialize_config_dir(config_dir=str(CONF_DIR), **VERSION_BASE):
            compose("config", overrides=["hydra/launcher=basic"], return_hydra_config=True)
    assert any(re.match(hydra_api.SCHEMA_MATCH, str(w.message)) for w in caught)


def test_no_other_module_uses_hydras_private_api():
    """hydra.core and hydra._internal, Hydra's singletons and OmegaConf's raw nodes: only in hydra_api.py."""
    import re

    package = Path(hydra_api.__file__).resolve().parents[1]
    private = re.compile(
        r"^\s*(from|import)\s+hydra\.(core|_internal)\b|\bhydra\.(core|_internal)\.\w+\s*=[^=]"
        r"|\bSingleton\._instances|\._get_node\(|\._value\(\)|\._is_none\(\)"
    )
    found = [
        f"{path.relative_to(package.parent)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "hydra_api.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == [], "\n".join(found)
