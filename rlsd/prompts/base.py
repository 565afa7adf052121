"""Prompt sources: resumable iterators over prompts, and the ``build_prompt_source`` registry.

A :class:`PromptSource` walks a fixed pool of prompts in a seeded random order, epoch after
epoch: the order of epoch ``e`` is the permutation drawn from ``numpy.random.default_rng([seed, e])``,
so the position is fully described by ``(epoch, cursor)`` and :meth:`state_dict` is tiny.
Generative sources (e.g. compositional prompts) override :meth:`next_batch` and keep a counter.

Spec forms accepted by :func:`build_prompt_source` (the ``name`` key picks the source)::

    {"name": "list", "prompts": ["a photo of a cat", ...]}
    {"name": "diffusiondb", "path": "data/diffusiondb/metadata.parquet", "split": "train", "seed": 0}
    {"name": "partiprompts", "path": "data/PartiPrompts.tsv"}
    {"name": "occupations"}
    {"name": "compositional", "split": "train"}
    {"name": "shapes_...", ...}        # ShapesWorld sources, rlsd/prompts/shapes.py
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["PromptSource", "ListPromptSource", "register_prompt_source", "build_prompt_source", "available_prompt_sources"]

_SOURCES: dict[str, Callable[..., "PromptSource"]] = {}
# source name -> module under rlsd.prompts registering it (imported on demand)
_MODULES: dict[str, str] = {"diffusiondb": "sources", "partiprompts": "sources", "occupations": "sources",
                            "compositional": "compositional"}
_PREFIX_MODULES: dict[str, str] = {"shapes": "shapes"}


class PromptSource:
    """Seeded, resumable walk over ``self.prompts``; subclasses fill the pool in ``__init__``."""

    name = "prompts"

    def __init__(self, prompts: Sequence[str], seed: int = 0, shuffle: bool = True):
        if len(prompts) == 0:
            raise ValueError(f"prompt source {self.name!r} has no prompts; check its file or 'prompts' list")
        self.prompts = list(prompts)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.prompts))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.prompts))

    def __len__(self) -> int:
        return len(self.prompts)

    def next_batch(self, n: int) -> list[str]:
        """The next ``n`` prompts, wrapping into a freshly shuffled epoch when the pool runs out."""
        if n < 0:
            raise ValueError(f"next_batch needs n >= 0, got {n}")
        batch = []
        while len(batch) < n:
            if self.cursor == len(self.prompts):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(n - len(batch), len(self.prompts) - self.cursor)
            batch += [self.prompts[i] for i in self._order[self.cursor:self.cursor + take]]
            self.cursor += take
        return batch

    def state_dict(self) -> dict:
        """Position (and a fingerprint of the pool, checked on load)."""
        return {"name": self.name, "seed": self.seed, "epoch": self.epoch, "cursor": self.cursor, "num_prompts": len(self.prompts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state``; raises ValueError if it was saved by a different source or pool."""
        mine = self.state_dict()
        for key in ("name", "seed", "num_prompts"):
            if state.get(key) != mine[key]:
                raise ValueError(f"prompt source state has {key}={state.get(key)!r} but this source has {mine[key]!r}; resume with the same prompt spec")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)


class ListPromptSource(PromptSource):
    """Explicit prompts from the config (``{"name": "list", "prompts": [...]}``)."""

    name = "list"


def register_prompt_source(name: str) -> Callable:
    """Decorator registering ``factory(**kwargs) -> PromptSource`` under ``name``."""

    def decorator(factory: Callable[..., PromptSource]) -> Callable[..., PromptSource]:
        _SOURCES[name] = factory
        return factory

    return decorator


register_prompt_source("list")(ListPromptSource)


def _import(module: str) -> None:
    full = f"rlsd.prompts.{module}"
    try:
        importlib.import_module(full)
    except ModuleNotFoundError as err:
        if err.name != full:
            raise


def available_prompt_sources() -> list[str]:
    """Names of all registered prompt sources (imports the source modules; they are cheap)."""
    for module in sorted(set(_MODULES.values()) | set(_PREFIX_MODULES.values())):
        _import(module)
    return sorted(_SOURCES)


def build_prompt_source(spec: Mapping[str, Any]) -> PromptSource:
    """Build a prompt source from ``{"name": <source>, **kwargs}`` (see the module docstring)."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"prompt spec must be a dict with a 'name' key, got {spec!r}; e.g. {{'name': 'list', 'prompts': [...]}}")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name not in _SOURCES:
        module = _MODULES.get(name) or next((m for p, m in _PREFIX_MODULES.items() if name.startswith(p)), None)
        if module is not None:
            _import(module)
    if name not in _SOURCES:
        raise ValueError(f"unknown prompt source {name!r}; available: {', '.join(available_prompt_sources())}")
    return _SOURCES[name](**kwargs)
