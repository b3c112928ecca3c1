"""svdbench: what Stable Video Diffusion costs, and what each optimization buys."""

import logging

__version__ = "0.1.0"

# Importing diffusers imports torchao (a dependency, for opt.quantize), which logs warnings that concern
# neither svdbench nor the user: CUDA-only extension libraries that a CPU build cannot load, Triton kernels
# absent without a GPU, deprecated pytree registrations, and diffusers' loader for torchao-serialized
# checkpoints, which svdbench never loads. Errors still get through.
for _name in (
    "torchao",
    "torch.utils._pytree",
    "diffusers.quantizers.torchao.torchao_quantizer",
):
    logging.getLogger(_name).setLevel(logging.ERROR)


# The modules that are commands (`python -m NAME`); any other module of the package run with -m says that it is
# not one and exits with status 2, instead of importing quietly and exiting 0 (a CI step using it would pass).
COMMANDS = (
    "svdbench",
    "svdbench.compare",
    "svdbench.compare.command",
    "svdbench.replay",
    "svdbench.metrics",
    "svdbench.plan",
)


def _refuse_non_command() -> None:
    import sys

    argv = list(getattr(sys, "orig_argv", []))
    if "-m" not in argv[1:]:
        return
    index = argv.index("-m", 1)
    name = argv[index + 1] if index + 1 < len(argv) else ""
    name = name.removesuffix(".__main__")
    if name.startswith("svdbench.") and name not in COMMANDS:
        print(
            f"error: {name} is a module of svdbench, not a command, so `python -m {name}` does nothing. The commands "
            "are: python -m svdbench (a run or a sweep), python -m svdbench.compare DIR [--gate] (comparison and "
            "faithfulness gate), python -m svdbench.replay RUN_DIR, python -m svdbench.metrics VIDEO, "
            "python -m svdbench.plan.",
            file=sys.stderr,
        )
        raise SystemExit(2)


_refuse_non_command()
