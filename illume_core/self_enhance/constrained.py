"""Grammar-constrained decoding of the self-assessment answer.

A small model learns the content of an assessment (which verdict, which reason) more slowly than
its shape, and one malformed key costs the whole answer: the parser then keeps it as `partial`
and the round gets no data from it. `AssessmentGrammar` masks, at every decoding step, the text
tokens that could not continue a well-formed answer

    object: yes[, reason]; count: no[, reason]; color: yes[, reason]; spatial: yes[, reason]<eos>

so the model still chooses every verdict and every reason word, but the keys, their order and the
separators are fixed. It works on characters (byte-level BPE tokens are exact substrings), so any
tokenization of the answer is allowed, and the masks are built once per automaton state.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import torch

from illume_core.model.text_tokenizer import TextTokenizer
from illume_core.world.rules import DIMENSIONS

__all__ = ["AssessmentGrammar", "REASON_CHARS"]

# what a reason may contain: printable ASCII without the parser's separators (';', newline,
# braces) and without ':' / '=' (a reason holding "count: no" would read as a verdict)
REASON_CHARS = frozenset(set(string.ascii_letters + string.digits + " ,.'-()/&") - set(";:={}\n"))
VERDICTS = ("yes", "no")

# states are small tuples: ("lit", i, k) k chars of the i-th key literal read; ("verdict", i, s)
# the verdict prefix s read; ("after", i) a whole verdict read; ("reason", i, n) n reason chars
# read; DONE after <eos>
State = tuple
DONE: State = ("done",)


class AssessmentGrammar:
    """Token masks that keep a generated answer in the assessment format.

    `start()` is the state before the first answer token; `mask(states)` gives the allowed text
    ids (B, V) for a batch of states; `advance(state, token_id)` the state after a token. Every
    state allows at least one token (single bytes are always in a byte-level vocabulary), so
    decoding never dead-ends; an answer cut by `max_new_tokens` stays unfinished and the parser
    reports it as partial.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        dimensions: Sequence[str] = DIMENSIONS,
        max_reason_chars: int = 64,
    ) -> None:
        if max_reason_chars < 1:
            raise ValueError(f"max_reason_chars must be >= 1, got {max_reason_chars}")
        self.dims = tuple(dimensions)
        self.lits = [("" if i == 0 else "; ") + f"{d}: " for i, d in enumerate(self.dims)]
        self.max_reason = max_reason_chars
        self.vocab_size = tokenizer.vocab_size
        self.eos_id = tokenizer.eos_id
        special = set(range(tokenizer.vocab_size)) - set(_plain_ids(tokenizer))
        # each text id's exact string ('' for special tokens, which are never allowed)
        self.text = [("" if i in special else tokenizer.decode([i])) for i in range(self.vocab_size)]
        self._by_first: dict[str, list[int]] = {}
        for i, t in enumerate(self.text):
            if t:
                self._by_first.setdefault(t[0], []).append(i)
        # for reason states: ids made only of reason chars, and their lengths
        lengths = torch.tensor([len(t) for t in self.text])  # (V,)
        pure = torch.tensor([bool(t) and all(c in REASON_CHARS for c in t) for t in self.text])
        self._pure_len = torch.where(pure, lengths, torch.full_like(lengths, 1 << 30))  # (V,)
        # ids with reason chars and then a ';' (a reason that ends inside the token)
        self._semi = [i for i, t in enumerate(self.text) if ";" in t and _lead(t) == t.index(";")]
        self._masks: dict[State, torch.Tensor] = {}
        self._closing: dict[State, torch.Tensor] = {}
        self._next: dict[tuple[State, int], State | None] = {}
        # worst-case tokens (one per character) to finish after dimension i's verdict, <eos> included
        self._tail = [
            sum(len(self.lits[j]) + 3 for j in range(i + 1, len(self.dims))) + 1
            for i in range(len(self.dims))
        ]

    # ---- the character automaton -----------------------------------------------------------
    def start(self) -> State:
        return ("lit", 0, 0)

    def accepting(self, st: State) -> bool:
        last = len(self.dims) - 1
        return st[0] in ("after", "reason") and st[1] == last

    def _step(self, st: State, c: str) -> State | None:
        kind, last = st[0], len(self.dims) - 1
        if kind == "lit":
            i, k = st[1], st[2]
            if c != self.lits[i][k]:
                return None
            return ("verdict", i, "") if k + 1 == len(self.lits[i]) else ("lit", i, k + 1)
        if kind == "verdict":
            i, s = st[1], st[2] + c
            if s in VERDICTS:
                return ("after", i)
            return ("verdict", i, s) if any(v.startswith(s) for v in VERDICTS) else None
        if kind in ("after", "reason"):
            i = st[1]
            if c == ";" and i < last:
                return ("lit", i + 1, 1)
            if kind == "after":
                return ("reason", i, 0) if c == "," else None
            return ("reason", i, st[2] + 1) if c in REASON_CHARS and st[2] < self.max_reason else None
        return None

    def _walk(self, st: State, text: str) -> State | None:
        for c in text:
            st = self._step(st, c)
            if st is None:
                return None
        return st

    # ---- tokens ---------------------------------------------------------------------------
    def advance(self, st: State, token_id: int) -> State | None:
        """The state after `token_id`; None when the grammar does not allow it."""
        if st == DONE:
            return DONE if token_id == self.eos_id else None
        if token_id == self.eos_id:
            return DONE if self.accepting(st) else None
        key = (st, token_id)
        if key not in self._next:
            t = self.text[token_id] if 0 <= token_id < self.vocab_size else ""
            self._next[key] = self._walk(st, t) if t else None
        return self._next[key]

    def allowed(self, st: State) -> torch.Tensor:
        """Bool (V,) of the text ids allowed in state `st` (built once per state)."""
        if st not in self._masks:
            m = torch.zeros(self.vocab_size, dtype=torch.bool)  # (V,)
            if st == DONE or self.accepting(st):
                m[self.eos_id] = True
            if st[0] == "reason":
                m |= self._pure_len <= self.max_reason - st[2]
                cands = self._semi
            elif st != DONE:
                firsts = [c for c in self._by_first if self._step(st, c) is not None]
                cands = [i for c in firsts for i in self._by_first[c]]
            else:
                cands = []
            for i in cands:
                if self.advance(st, i) is not None:
                    m[i] = True
            self._masks[st] = m
        return self._masks[st]

    def cost(self, st: State) -> int:
        """Tokens that always suffice to finish from `st` without more reason text (a token holds
        at least one character; a verdict is counted as 'yes')."""
        kind = st[0]
        if st == DONE:
            return 0
        if kind == "lit":
            return len(self.lits[st[1]]) - st[2] + 3 + self._tail[st[1]]
        if kind == "verdict":
            return 3 - len(st[2]) + self._tail[st[1]]
        return self._tail[st[1]]

    def closing(self, st: State) -> torch.Tensor:
        """Bool (V,): the ids allowed in `st` that do not start or extend a reason."""
        if st not in self._closing:
            m = self.allowed(st).clone()
            if st[0] in ("after", "reason"):
                for i in m.nonzero().flatten().tolist():
                    nxt = self.advance(st, i)
                    if nxt is not None and nxt[0] == "reason" and nxt[1] == st[1]:
                        m[i] = False
            self._closing[st] = m
        return self._closing[st]

    def mask(self, states: Sequence[State], remaining: int | None = None) -> torch.Tensor:
        """Bool (B, V) of the allowed text ids for each row's state.

        With `remaining` (the tokens left for the answer, this one included), a row whose reason
        would leave too few tokens to write the other keys is made to close it now, so an answer
        that fits at its start (`cost(start()) <= remaining`) is never cut.
        """
        rows = []
        for s in states:
            tight = remaining is not None and s[0] in ("after", "reason") and self.cost(s) > remaining - 1
            rows.append(self.closing(s) if tight else self.allowed(s))
        return torch.stack(rows)  # (B, V)


def _plain_ids(tokenizer: TextTokenizer) -> list[int]:
    """Text ids that are not special tokens."""
    specials = {int(i) for i in tokenizer.tokenizer.get_added_tokens_decoder()}
    return [i for i in range(tokenizer.vocab_size) if i not in specials]


def _lead(text: str) -> int:
    """Length of the leading run of reason chars in `text`."""
    n = 0
    while n < len(text) and text[n] in REASON_CHARS:
        n += 1
    return n
