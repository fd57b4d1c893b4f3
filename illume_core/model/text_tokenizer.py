"""The LLM's text tokenizer: a byte-level BPE trained on ShapesWorld text, plus the special tokens.

Byte-level BPE (not WordLevel) because decoding must give back the exact text: assessments are
JSON-like and are parsed after generation, and user prompts may hold words the corpus never had.
Special tokens take the first ids, so they are stable across vocab sizes; `tokenizer.json` is the
whole saved state and loads back identically.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
IMAGE = "<image>"  # placeholder for one continuous image feature (understanding input)
SOI, EOI = "<soi>", "<eoi>"  # start / end of a discrete image (generation output)
USER, ASSISTANT, SYSTEM = "<user>", "<assistant>", "<system>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, IMAGE, SOI, EOI, USER, ASSISTANT, SYSTEM)


class TextTokenizer:
    """Text <-> ids for the LLM. Ids 0..len(SPECIAL_TOKENS)-1 are the special tokens, in order."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(
                f"tokenizer lacks the special tokens {missing}; train it with TextTokenizer.train"
            )
        self.tokenizer = tokenizer
        self.pad_id, self.bos_id, self.eos_id, self.image_id, self.soi_id, self.eoi_id = (
            self.token_id(t) for t in (PAD, BOS, EOS, IMAGE, SOI, EOI)
        )
        self.user_id, self.assistant_id, self.system_id = (
            self.token_id(t) for t in (USER, ASSISTANT, SYSTEM)
        )

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> TextTokenizer:
        """Train a byte-level BPE of at most `vocab_size` ids (specials included) on `texts`."""
        if vocab_size < len(SPECIAL_TOKENS) + 256:
            raise ValueError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least 265 ids")
        tok = Tokenizer(models.BPE())
        # no prefix space: a word after a special token is encoded the same at train and sample time
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[_special(t) for t in SPECIAL_TOKENS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_str(cls, text: str) -> TextTokenizer:
        return cls(Tokenizer.from_str(text))

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer file at {path}; a checkpoint keeps it as tokenizer.json")
        return cls(Tokenizer.from_file(str(path)))

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_str(), encoding="utf-8")

    @property
    def vocab_size(self) -> int:
        """Number of text ids, specials included; image codes come after these in the LLM vocab."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise KeyError(f"{token!r} is not in the vocabulary")
        return i

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special tokens written in the text (e.g. "<user>") become their ids."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` (ids beyond the text vocab, i.e. image codes, are dropped)."""
        n = self.vocab_size
        return self.tokenizer.decode([int(i) for i in ids if 0 <= int(i) < n], skip_special_tokens)


def _special(token: str) -> AddedToken:
    # stripping the spaces around a special token keeps "<user> hi" and "<user>hi" identical
    return AddedToken(token, special=True, lstrip=True, rstrip=True, normalized=False)
