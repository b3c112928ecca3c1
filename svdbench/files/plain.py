"""Values as plain JSON: what results.json and the metrics write."""

from __future__ import annotations

import math
from typing import Any


def plain_json(value: Any) -> Any:
    """`value` with NaN and infinity as None (JSON has neither), numpy scalars as Python numbers and bools,
    tuples as lists, dicts and lists element-wise."""
    if isinstance(value, dict):
        return {key: plain_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(item) for item in value]
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # a numpy scalar (numpy is not needed here)
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
