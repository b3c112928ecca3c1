"""Will it fit? The peak device memory of a configuration, predicted in seconds without a GPU or weights.

`predict(cfg)` returns a `Prediction` (peak allocated GiB of one pipeline call, the phase that holds it and
what it is made of) or raises `CannotPredict` with the reason; `python -m svdbench.plan [overrides]` prints
it with a fit table of every opt preset against common GPU memory sizes (docs/plan.md).
"""

from svdbench.plan.planner import CannotPredict, Prediction, predict, try_predict

__all__ = ["CannotPredict", "Prediction", "predict", "try_predict"]
