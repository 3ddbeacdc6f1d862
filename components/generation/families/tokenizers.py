"""Tokenizers made offline from a vocabulary (transformers 5 tokenizer classes accept one directly), for the tiny
models: a character-level T5 (unigram) tokenizer covers Wan, CogVideoX and LTX."""

from __future__ import annotations

import string

__all__ = ["char_t5_tokenizer", "character_vocabulary"]


def character_vocabulary() -> list[tuple[str, float]]:
    """A character-level unigram vocabulary: special tokens, the word boundary, then printable characters."""
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for i, char in enumerate(sorted(set(string.ascii_letters + string.digits + string.punctuation))):
        pieces.append((char, -3.0 - i * 0.01))
    return pieces


def char_t5_tokenizer():  # -> transformers.T5Tokenizer
    """A character-level T5 (unigram) tokenizer, made from a vocabulary: covers Wan, CogVideoX and LTX offline."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=character_vocabulary(), extra_ids=0)
