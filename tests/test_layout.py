"""The package's tree keeps the rules docs/design.md states: imports only point down the layers, no module
imports itself back through others, and at most 16 modules sit at the top of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "svdbench"

# Bottom first: a module may import from its own layer's package or from any layer below it, never above.
LAYERS = [
    "settings",  # the typed schema, the command-line check, Hydra's internals
    "files",  # atomic writes, safe reads, the directory lock, the JSON cache
    "media",  # frames and images in and out
    "pipeline",  # the pipeline: weights, the call, optimization modes
    "measure",  # clocks, memory, energy, machine state, FLOPs, the profiler
    "plan",  # the memory and time planner on meta tensors
    "metrics",  # the weight-free flicker suite
    "quality",  # quality samples over images x seeds, paired metrics (VMAF), intervals and their verdict
    "record",  # results, identity, the run directory, the run's page, W&B
    "runner",  # the measurement loop
    "replay",  # a run repeated from its record
    "compare",  # the comparison of finished jobs, the gate, the sweep's page
    "sweep",  # one process per job, resume, failures as results
    "__main__",  # the entry
]


def _layer(module: str) -> str:
    """svdbench.record.results -> record; svdbench.runner -> runner; svdbench -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every svdbench module this one imports, at the top or inside a function alike."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    package = package.rsplit(".", 1)[0]
                base = f"{package}.{base}" if base else package
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        out.update(name for name in names if name.split(".")[0] == "svdbench" and name in known)
    out.discard(module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_imports_only_point_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, imported in _graph().items():
        for target in imported:
            a, b = _layer(module), _layer(target)
            if a == "__init__" or b == "__init__" or a == b:
                continue
            assert a in rank, f"{module}: its package {a!r} has no place in LAYERS (tests/test_layout.py)"
            if rank[b] > rank[a]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports running up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = _graph()
    seen: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node)


def test_at_most_sixteen_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 16, top
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert set(LAYERS) - {"runner", "replay", "__main__"} <= subpackages


def test_the_checker_sees_an_upward_import(tmp_path):
    """The graph is read from the code: a module of the bottom layer importing the runner would be caught."""
    graph = _graph()
    assert "svdbench.runner" in graph["svdbench.__main__"] or any(
        "svdbench.runner" in targets for targets in graph.values()
    )
    rank = {name: i for i, name in enumerate(LAYERS)}
    assert rank[_layer("svdbench.settings.config")] < rank[_layer("svdbench.runner")]


@pytest.mark.parametrize("command", ["svdbench.__main__", "svdbench.plan.__main__", "svdbench.metrics.__main__"])
def test_a_command_line_is_checked_before_the_heavy_libraries_load(command):
    """A bad command line or `--help` is answered before torch, diffusers or transformers are imported (several
    seconds): importing a command's module loads none of them; they come once the settings are known to be good."""
    import subprocess
    import sys

    heavy = ("torch", "diffusers", "transformers")
    code = f"import sys, {command}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
