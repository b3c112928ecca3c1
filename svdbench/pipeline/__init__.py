"""The pipeline under test: building it (models), the optimization modes, quantization and DeepCache.

SVD's conditioning image goes through CLIP's image processor. transformers 5 names its torchvision backend
`CLIPImageProcessor` and, without torchvision, falls back to `CLIPImageProcessorPil` with a warning on every
run. svdbench does not depend on torchvision (a second, torch-version-locked wheel for one resize): it picks
the PIL processor itself, the one the fallback uses, so the frames are the same and no warning is printed.
This must happen before diffusers imports its SVD pipeline: every function that builds or simulates a pipeline
calls `use_pil_clip_processor()` first. Not at import time: importing transformers' image processors takes
seconds, and a bad command line or `--help` must not wait for them.
"""

from __future__ import annotations

import functools


@functools.cache
def use_pil_clip_processor() -> None:
    """Make `transformers.CLIPImageProcessor` the PIL processor when torchvision is absent (once per process)."""
    import importlib.util
    import sys

    if importlib.util.find_spec("torchvision") is not None:
        return
    try:
        from transformers import CLIPImageProcessorPil  # type: ignore[attr-defined,unused-ignore]
    except ImportError:  # transformers before 5: CLIPImageProcessor is the PIL processor already
        return
    # The module as it is now: transformers' lazy module replaces itself in sys.modules while the import runs.
    setattr(sys.modules["transformers"], "CLIPImageProcessor", CLIPImageProcessorPil)  # noqa: B010
