"""Token ids -> text deltas, cut at the first stop string.

The whole reply is decoded again at each token (SentencePiece-style tokenizers only place spaces
right in context). Text that could still become a stop string, or that ends in an incomplete
UTF-8 sequence, is held back until the next token settles it.
"""

from __future__ import annotations

from collections.abc import Sequence

INCOMPLETE = "\ufffd"


class TextStream:
    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of `text` already handed out

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; return (new text to hand out, whether a stop string was reached)."""
        self.ids.append(token_id)
        # No space clean-up: it can change text already handed out ("a ," -> "a,").
        self.text = self.tokenizer.decode(
            self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        cut = self._first_stop()
        if cut is not None:
            self.text = self.text[:cut]
            return self._advance(cut), True
        return self._advance(len(self.text) - self._held_back()), False

    def flush(self) -> str:
        """The rest of the text, once the reply is over."""
        return self._advance(len(self.text))

    def _advance(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta, self.sent = self.text[self.sent : upto], upto
        return delta

    def _first_stop(self) -> int | None:
        hits = []
        for s in self.stop:
            # A stop string can only newly appear overlapping the text not yet handed out.
            i = self.text.find(s, max(0, self.sent - len(s) + 1))
            if i >= 0:
                hits.append(i)
        return min(hits) if hits else None

    def _held_back(self) -> int:
        """Characters at the end that the next token may still change: an incomplete UTF-8
        sequence, and before it the longest start of a stop string (the incomplete character
        may be that string's next one)."""
        settled = self.text.rstrip(INCOMPLETE)
        partial = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(settled)), 0, -1):
                if settled.endswith(s[:k]):
                    partial = max(partial, k)
                    break
        return len(self.text) - len(settled) + partial
