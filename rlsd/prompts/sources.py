"""File-backed and fixed prompt sources: DiffusionDB, PartiPrompts, occupation portraits."""

from __future__ import annotations

from pathlib import Path

from rlsd.prompts.base import PromptSource, register_prompt_source
from rlsd.prompts.compositional import article

__all__ = ["DiffusionDBSource", "PartiPromptsSource", "OccupationSource", "OCCUPATIONS", "load_diffusiondb_prompts"]

DIFFUSIONDB_HINT = ("download metadata.parquet of DiffusionDB (https://huggingface.co/datasets/poloclub/diffusiondb, "
                    "file metadata.parquet) and pass its path as prompts.path")
PARTI_HINT = "download PartiPrompts.tsv from https://github.com/google-research/parti (column 'Prompt') and pass its path as prompts.path"

# 100 occupations for "a portrait of a {occupation}" (skin-tone parity task)
OCCUPATIONS = (
    "accountant", "actor", "architect", "artist", "astronaut", "athlete", "baker", "banker", "barber", "bartender",
    "biologist", "blacksmith", "bus driver", "butcher", "carpenter", "cashier", "chef", "chemist", "civil engineer",
    "cleaner", "coach", "construction worker", "cook", "dancer", "dentist", "designer", "detective", "dietitian",
    "doctor", "economist", "editor", "electrician", "engineer", "farmer", "firefighter", "fisherman", "flight attendant",
    "florist", "gardener", "geologist", "graphic designer", "hairdresser", "historian", "housekeeper", "janitor",
    "journalist", "judge", "lawyer", "librarian", "lifeguard", "locksmith", "machinist", "mail carrier", "manager",
    "mathematician", "mechanic", "midwife", "musician", "nurse", "optician", "painter", "paramedic", "pharmacist",
    "photographer", "physicist", "physiotherapist", "pilot", "plumber", "poet", "police officer", "politician",
    "professor", "programmer", "psychologist", "receptionist", "reporter", "researcher", "sailor", "salesperson",
    "scientist", "sculptor", "secretary", "security guard", "singer", "social worker", "software developer", "soldier",
    "surgeon", "tailor", "taxi driver", "teacher", "technician", "therapist", "translator", "truck driver",
    "veterinarian", "waiter", "web developer", "welder", "writer",
)


def _require(path: str | Path, hint: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist; {hint}")
    return path


def load_diffusiondb_prompts(path: str | Path, split: str = "train", num_eval: int = 2000) -> list[str]:
    """Unique non-empty prompts of a DiffusionDB ``metadata.parquet`` (column ``prompt``), split.

    Unique prompts keep their file order; the last ``num_eval`` of them are the held-out ``"eval"``
    split (as in the paper), the rest are ``"train"``. The split does not depend on any seed.
    """
    import pandas as pd

    if split not in ("train", "eval"):
        raise ValueError(f"prompts.split must be 'train' or 'eval', got {split!r}")
    frame = pd.read_parquet(_require(path, DIFFUSIONDB_HINT), columns=None)
    if "prompt" not in frame.columns:
        raise ValueError(f"{path} has no 'prompt' column (columns: {list(frame.columns)}); expected DiffusionDB metadata.parquet")
    prompts = frame["prompt"].dropna().astype(str).str.strip()
    unique = list(dict.fromkeys(p for p in prompts if p))
    if len(unique) <= num_eval:
        raise ValueError(f"{path} has {len(unique)} unique prompts, not more than prompts.num_eval={num_eval}; lower num_eval")
    return unique[:-num_eval] if split == "train" else unique[-num_eval:]


@register_prompt_source("diffusiondb")
class DiffusionDBSource(PromptSource):
    """DiffusionDB prompts (train or the held-out last ``num_eval`` unique prompts), seeded order."""

    name = "diffusiondb"

    def __init__(self, path: str, split: str = "train", num_eval: int = 2000, seed: int = 0, shuffle: bool = True):
        super().__init__(load_diffusiondb_prompts(path, split, num_eval), seed=seed, shuffle=shuffle)
        self.split = split


@register_prompt_source("partiprompts")
class PartiPromptsSource(PromptSource):
    """PartiPrompts (TSV with a ``Prompt`` column), optionally one ``category``."""

    name = "partiprompts"

    def __init__(self, path: str, category: str | None = None, seed: int = 0, shuffle: bool = True):
        import pandas as pd

        frame = pd.read_csv(_require(path, PARTI_HINT), sep="\t")
        if "Prompt" not in frame.columns:
            raise ValueError(f"{path} has no 'Prompt' column (columns: {list(frame.columns)}); expected PartiPrompts.tsv")
        if category is not None:
            frame = frame[frame["Category"] == category]
        super().__init__(list(frame["Prompt"].dropna().astype(str)), seed=seed, shuffle=shuffle)


@register_prompt_source("occupations")
class OccupationSource(PromptSource):
    """``template.format(article=..., occupation=...)`` over :data:`OCCUPATIONS` (or a given list).

    The default template is "a portrait of {article} {occupation}" ("a portrait of an accountant").
    """

    name = "occupations"

    def __init__(self, template: str = "a portrait of {article} {occupation}", occupations: list[str] | None = None,
                 seed: int = 0, shuffle: bool = True):
        if "{occupation}" not in template:
            raise ValueError(f"prompts.template must contain '{{occupation}}', got {template!r}")
        names = occupations or OCCUPATIONS
        super().__init__([template.format(article=article(o), occupation=o) for o in names], seed=seed, shuffle=shuffle)
