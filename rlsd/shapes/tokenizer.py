"""Word-level tokenizer over the ShapesWorld grammar, saved in Hugging Face format.

``build_tokenizer()`` returns a ``PreTrainedTokenizerFast`` (tokenizers ``WordLevel`` model,
lower-casing normaliser, ``WhitespaceSplit`` pre-tokenizer, ``[BOS] $A [EOS]`` template);
``tokenizer.save_pretrained(folder)`` writes a folder that
``transformers.AutoTokenizer.from_pretrained(folder)`` loads.

Special ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3; words follow in
``VOCAB_WORDS`` order. ``model_max_length`` 12 covers the longest caption (8 words + 2 specials).
Prompts are encoded like Stable Diffusion: ``padding="max_length"``, no attention mask, the
text encoder's ``last_hidden_state`` as cross-attention context (:func:`encode_captions`).
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from rlsd.shapes.grammar import VOCAB_WORDS

__all__ = ["SPECIAL_TOKENS", "MODEL_MAX_LENGTH", "build_tokenizer", "encode_captions"]

SPECIAL_TOKENS: dict[str, str] = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}
MODEL_MAX_LENGTH = 12


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level fast tokenizer over ``VOCAB_WORDS`` (vocab size 4 + len(VOCAB_WORDS) = 20)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    specials = [SPECIAL_TOKENS[k] for k in ("pad_token", "unk_token", "bos_token", "eos_token")]
    vocab = {tok: i for i, tok in enumerate([*specials, *VOCAB_WORDS])}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=MODEL_MAX_LENGTH, **SPECIAL_TOKENS)


def encode_captions(tokenizer, text_encoder, captions: list[str]):
    """Token ids -> ``last_hidden_state`` (B, L, D) with L = ``tokenizer.model_max_length`` (SD-style)."""
    ids = tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0]
