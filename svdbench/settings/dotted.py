"""Nested dicts addressed by dotted paths: `flatten` for tables and W&B keys, `lookup` for one value."""

from __future__ import annotations

from typing import Any


def flatten(data: dict[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level: {"opt": {"name": "none"}} -> {"opt.name": "none"} with sep=".". Lists stay."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, sep, name))
        else:
            flat[name] = value
    return flat


def lookup(record: dict[str, Any], dotted: str) -> Any:
    """A nested value by its dotted path ("opt.compile.mode"); None where the path does not exist."""
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
