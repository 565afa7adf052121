"""Prompt sources (resumable iterators) and their registry; see :mod:`rlsd.prompts.base`."""

from rlsd.prompts.base import (
    ListPromptSource,
    PromptSource,
    available_prompt_sources,
    build_prompt_source,
    register_prompt_source,
)

__all__ = ["PromptSource", "ListPromptSource", "register_prompt_source", "build_prompt_source", "available_prompt_sources"]
