"""Reward registry: ``register_reward`` decorator, ``build_reward(spec)``, ``available_rewards()``.

Family modules are imported lazily, only when one of their names is requested, so
``import rlsd.rewards`` stays cheap (no transformers / cv2 import). Each family module registers
its factories with ``@register_reward("name")`` at import time; factories take keyword
arguments and return a :class:`~rlsd.rewards.base.Reward`.

Spec forms accepted by :func:`build_reward`::

    "jpeg_compressibility"
    {"name": "imagereward", "model_dir": "/models/ImageReward"}
    {"combine": [{"name": "imagereward", "weight": 1.0, "model_dir": ...},
                 {"name": "skin_tone_parity", "weight": 0.5}]}
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from rlsd.rewards.base import CombinedReward, Reward

__all__ = ["register_reward", "build_reward", "available_rewards", "FAMILY_MODULES"]

Factory = Callable[..., Reward]
_REGISTRY: dict[str, Factory] = {}

# reward name -> family module under rlsd.rewards that registers it (imported on demand)
FAMILY_MODULES: dict[str, str] = {
    "jpeg_compressibility": "jpeg",
    "jpeg_incompressibility": "jpeg",
    "imagereward": "imagereward",
    "pickscore": "clip_rewards",
    "aesthetic": "clip_rewards",
    "clipscore": "clip_rewards",
    "compositional": "detection",
    "skin_tone_parity": "fairness",
}
# name prefix -> family module (ShapesWorld rewards are written in rlsd/rewards/shapes.py)
PREFIX_MODULES: dict[str, str] = {"shapes_": "shapes"}


def register_reward(name: str) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(**kwargs) -> Reward`` under ``name``."""

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"reward name {name!r} is already registered by {_REGISTRY[name]!r}")
        _REGISTRY[name] = factory
        return factory

    return decorator


def _import_family(module: str) -> None:
    """Import ``rlsd.rewards.<module>``; a missing family module is skipped, other errors raise."""
    full = f"rlsd.rewards.{module}"
    try:
        importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name != full:
            raise


def _family_of(name: str) -> str | None:
    if name in FAMILY_MODULES:
        return FAMILY_MODULES[name]
    for prefix, module in PREFIX_MODULES.items():
        if name.startswith(prefix):
            return module
    return None


def available_rewards() -> list[str]:
    """All registered reward names (imports every family module, which is cheap: heavy imports are lazy)."""
    for module in sorted(set(FAMILY_MODULES.values()) | set(PREFIX_MODULES.values())):
        _import_family(module)
    return sorted(_REGISTRY)


def _factory(name: str) -> Factory:
    if name not in _REGISTRY:
        module = _family_of(name)
        if module is not None:
            _import_family(module)
    if name not in _REGISTRY:
        raise ValueError(f"unknown reward {name!r}; available rewards: {', '.join(available_rewards())}")
    return _REGISTRY[name]


def build_reward(spec: str | Mapping[str, Any]) -> Reward:
    """Build a reward from ``"name"``, ``{"name": ..., **kwargs}`` or ``{"combine": [...]}``.

    In a ``combine`` list every entry is ``{"name": ..., "weight": w, **kwargs}`` (weight defaults
    to 1.0); the result is a :class:`CombinedReward` computing ``sum_k w_k * r_k``.
    """
    if isinstance(spec, str):
        return _factory(spec)()
    if not isinstance(spec, Mapping):
        raise ValueError(f"reward spec must be a name or a dict, got {type(spec).__name__}")
    spec = dict(spec)
    if "combine" in spec:
        entries = spec.pop("combine")
        if spec.keys() - {"name"}:
            raise ValueError(f"a combine spec takes only 'combine' (and 'name'), got extra keys {sorted(spec.keys() - {'name'})}")
        if not isinstance(entries, (list, tuple)) or not entries:
            raise ValueError("reward spec 'combine' must be a non-empty list of {'name': ..., 'weight': ...} dicts")
        components = []
        for entry in entries:
            entry = dict(entry) if isinstance(entry, Mapping) else {"name": entry}
            weight = float(entry.pop("weight", 1.0))
            components.append((weight, build_reward(entry)))
        return CombinedReward(components, name=spec.get("name", "combined"))
    if "name" not in spec:
        raise ValueError(f"reward spec {spec!r} needs a 'name' key (or 'combine'); available: {', '.join(available_rewards())}")
    name = spec.pop("name")
    return _factory(name)(**spec)
