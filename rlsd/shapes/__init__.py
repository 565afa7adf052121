"""ShapesWorld: the embedded default world (pixel-space 32x32) and its shipped base model.

Modules (each importable on its own; this package import is cheap, numpy only):

===============  ==============================================================
grammar          caption grammar, ``CaptionSpec``, ``parse``, held-out compositions
scene            ``Scene`` dataclass, relation geometry, ``sample_scene``, ``caption``
render           anti-aliased numpy renderer with degradations
dataset          biased pretraining data ``ShapesPretrainData`` (diversity /
                 compositionality / quality biases, documented there)
tokenizer        word-level HF tokenizer over the grammar
base_training    CLI training the shipped base model ``data/shapesworld_base``
detector         analytic colour/shape detector (compositional + parity rewards)
gold             hidden "gold" image-quality function (preference labels, evaluation)
preference       tiny learned preference reward model (ImageReward analogue)
evaluate         evaluation table of a model on ShapesWorld rewards
===============  ==============================================================
"""

from rlsd.shapes.grammar import COLOURS, RELATIONS, SHAPES, CaptionSpec, ObjectSpec, parse, spec_caption
from rlsd.shapes.render import render, render_batch
from rlsd.shapes.scene import Scene, SceneObject, caption, sample_scene

__all__ = [
    "COLOURS", "SHAPES", "RELATIONS", "CaptionSpec", "ObjectSpec", "parse", "spec_caption",
    "Scene", "SceneObject", "caption", "sample_scene", "render", "render_batch",
]
