"""The tokenizer of the built-in models: a byte-level BPE trained on the dataset's own text.

The built-in models have random weights, so nothing ties them to an existing vocabulary; a small
vocabulary trained on the prompts and answers keeps the tiny model's embedding and output layers
small, and byte-level BPE can still spell any title that the training text never showed.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

# tokenizers and transformers are imported in the functions that use them: the CLI imports this module
# (through config and models) to parse its flags, and must not wait seconds for them.

# Phi-3-vision's chat and image markers, so prompts read the same as with the real model.
USER, ASSISTANT, END, IMAGE = "<|user|>", "<|assistant|>", "<|end|>", "<|image_1|>"
UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS: tuple[str, ...] = (UNK, BOS, EOS, PAD, USER, ASSISTANT, END, IMAGE)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2,
                    extra_special_tokens: Mapping[str, str] | None = None):
    """Train a byte-level BPE on ``texts`` and wrap it for transformers.

    Deterministic: the same texts in the same order give the same vocabulary and merges.
    Special tokens take ids 0..7 in ``SPECIAL_TOKENS`` order; ``extra_special_tokens`` (a model family's
    image and chat markers, by name: ``{"image_token": "<|image_pad|>"}``) follow them, and each name
    becomes an attribute of the tokenizer (``tokenizer.image_token``), as real processors expect.
    """
    extra = dict(extra_special_tokens or {})
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *(t for t in extra.values() if t not in SPECIAL_TOKENS)],
        # Every byte gets a token, so no text is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        # Generation stops at the end-of-turn marker, as with Phi-3.
        eos_token=END,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens={**extra} if extra else [USER, ASSISTANT, IMAGE],
        padding_side="right",
        # Phi-3 chat text is tokenized as written: no implicit BOS/EOS around it.
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str | Path):
    """Load a tokenizer saved with ``save_pretrained`` (e.g. from a run's ``processor/`` folder)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
