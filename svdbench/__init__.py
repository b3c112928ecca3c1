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
