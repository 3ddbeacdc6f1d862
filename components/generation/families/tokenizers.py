"""Tokenizers made offline from a vocabulary (transformers 5 tokenizer classes accept one directly), for the tiny
models: a character-level T5 (unigram) tokenizer covers Wan, CogVideoX and LTX; HunyuanVideo needs a Llama-style and a
CLIP-style one (character vocabularies with an empty merge list)."""

from __future__ import annotations

import string
from typing import Any

__all__ = [
    "TEXT_DIM",
    "char_clip_tokenizer",
    "char_llama_tokenizer",
    "char_t5_tokenizer",
    "character_vocabulary",
    "tiny_t5_encoder",
]

TEXT_DIM = 32  # the tiny T5/UMT5 text encoders' width


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


def char_llama_tokenizer():  # -> transformers.LlamaTokenizer (LlamaTokenizerFast is its alias in transformers 5)
    """A character-level Llama (BPE) tokenizer made offline: special tokens, the word boundary, printable characters
    and the 256 byte-fallback tokens (so no text is unknown), with an *empty merge list* — every character is one
    token. It pads on the right, as HunyuanVideo's transformer assumes (it takes the mask's count of ones as the
    leading valid tokens). Reloads unchanged from ``save_pretrained`` (tested with HunyuanVideo's tiny model)."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "▁": 4}
    for char in sorted(set(string.ascii_letters + string.digits + string.punctuation)):
        vocab.setdefault(char, len(vocab))
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>", add_bos_token=True, padding_side="right")


def char_clip_tokenizer():  # -> transformers.CLIPTokenizer
    """A character-level CLIP (byte-level BPE) tokenizer made offline: the 256 byte symbols, each also as a word
    end (``</w>``), with an *empty merge list*, so every text is covered one character a token."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for symbol in symbols:
            vocab[symbol + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_t5_encoder(vocab_size: int, *, umt5: bool = False) -> Any:  # -> transformers.T5EncoderModel / UMT5…
    """The tiny T5 text encoder of the tiny models (UMT5 for Wan, T5 for CogVideoX and LTX), ``TEXT_DIM`` wide,
    random weights from the caller's seed."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    shape: dict[str, Any] = dict(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    if umt5:
        return UMT5EncoderModel(UMT5Config(**shape, decoder_start_token_id=0))
    return T5EncoderModel(T5Config(**shape))
