"""Compositional two-object prompts (paper Sec. 4.2): generator, parser and class split.

Grammar::

    <a|an> <object> <relation> <a|an> <object>
    relation in {"and", "next to", "near", "beside", "on side of"}

The vocabulary is ``rlsd/prompts/objects.txt`` (532 common-object class names, COCO-80 first; package data,
so it ships in the wheel). As in the paper the classes are split by a seeded permutation into 450 training
and 82 held-out classes; held-out prompts use only held-out classes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from rlsd.prompts.base import PromptSource, register_prompt_source

__all__ = ["RELATIONS", "OBJECTS_PATH", "load_objects", "split_objects", "article", "make_prompt", "parse_prompt",
           "CompositionalSource"]

RELATIONS = ("and", "next to", "near", "beside", "on side of")
OBJECTS_PATH = Path(__file__).resolve().with_name("objects.txt")
NUM_TRAIN_CLASSES = 450
_RELATION_RE = "|".join(re.escape(r) for r in sorted(RELATIONS, key=len, reverse=True))
_NOUN_RE = re.compile(r"^(?:a|an) (\S.*)$")


@lru_cache(maxsize=4)
def load_objects(path: str | Path = OBJECTS_PATH) -> tuple[str, ...]:
    """Object class names from ``path`` (one per line, ``#`` comments skipped), validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"object vocabulary {path} does not exist; it ships inside the package as rlsd/prompts/objects.txt (reinstall rlsd)")
    names = [line.strip().lower() for line in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if len(set(names)) != len(names):
        raise ValueError(f"{path} lists some object names twice; keep each class once")
    for name in names:
        if re.search(rf"(^|\s)({_RELATION_RE}|a|an)(\s|$)", name):
            raise ValueError(f"object name {name!r} in {path} contains a relation word or article; the prompt parser needs it removed")
    return tuple(names)


def split_objects(objects: tuple[str, ...] | None = None, seed: int = 0, num_train: int = NUM_TRAIN_CLASSES) -> tuple[list[str], list[str]]:
    """Seeded class split: (train classes, held-out classes), 450 / 82 for the shipped vocabulary."""
    objects = load_objects() if objects is None else tuple(objects)
    if not 0 < num_train < len(objects):
        raise ValueError(f"num_train={num_train} must lie strictly between 0 and the {len(objects)} classes")
    order = np.random.default_rng(seed).permutation(len(objects))
    return [objects[i] for i in order[:num_train]], [objects[i] for i in order[num_train:]]


def article(noun: str) -> str:
    """'an' before a vowel sound (by first letter), else 'a'."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


def make_prompt(first: str, relation: str, second: str) -> str:
    """``make_prompt("apple", "next to", "dog") == "an apple next to a dog"``."""
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    return f"{article(first)} {first} {relation} {article(second)} {second}"


def parse_prompt(prompt: str, vocabulary: tuple[str, ...] | None = None) -> tuple[str, str, str]:
    """Inverse of :func:`make_prompt`: ``(first, relation, second)``.

    Multi-word names are supported; with ``vocabulary`` the first split whose two objects are both
    known wins (so a name containing a relation word cannot be mis-split), else the leftmost split.
    """
    text = " ".join(prompt.strip().lower().rstrip(".").split())
    candidates = []
    for rel in re.finditer(rf"(?=\s({_RELATION_RE})\s)", text):
        left, right = text[: rel.start()], text[rel.start() + len(rel.group(1)) + 2:]
        first, second = _NOUN_RE.match(left), _NOUN_RE.match(right)
        if first and second:
            candidates.append((first.group(1), rel.group(1), second.group(1)))
    if vocabulary is not None:
        candidates = [c for c in candidates if c[0] in vocabulary and c[2] in vocabulary] or candidates
    if not candidates:
        raise ValueError(f"prompt {prompt!r} is not of the form '<a/an> <object> <relation> <a/an> <object>' with relation in {RELATIONS}")
    return candidates[0]


@register_prompt_source("compositional")
class CompositionalSource(PromptSource):
    """Endless random two-object prompts; prompt ``i`` is drawn from ``default_rng([seed, i])``."""

    name = "compositional"

    def __init__(self, split: str = "train", seed: int = 0, split_seed: int = 0, objects_path: str | None = None):
        if split not in ("train", "eval"):
            raise ValueError(f"prompts.split must be 'train' or 'eval', got {split!r}")
        train, held_out = split_objects(load_objects(objects_path or OBJECTS_PATH), seed=split_seed)
        self.objects = train if split == "train" else held_out
        self.prompts, self.seed, self.split = self.objects, int(seed), split
        self.epoch, self.cursor = 0, 0  # epoch unused; cursor counts prompts drawn

    def __len__(self) -> int:
        return len(self.objects) * (len(self.objects) - 1) * len(RELATIONS)

    def prompt_at(self, index: int) -> str:
        rng = np.random.default_rng([self.seed, index])
        i, j = rng.choice(len(self.objects), size=2, replace=False)
        return make_prompt(self.objects[i], RELATIONS[rng.integers(len(RELATIONS))], self.objects[j])

    def next_batch(self, n: int) -> list[str]:
        batch = [self.prompt_at(self.cursor + k) for k in range(n)]
        self.cursor += n
        return batch

    def state_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "epoch": 0, "cursor": self.cursor, "num_prompts": len(self.objects)}

    def load_state_dict(self, state) -> None:
        mine = self.state_dict()
        for key in ("name", "seed", "num_prompts"):
            if state.get(key) != mine[key]:
                raise ValueError(f"prompt source state has {key}={state.get(key)!r} but this source has {mine[key]!r}; resume with the same prompt spec")
        self.cursor = int(state["cursor"])
