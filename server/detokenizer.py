"""Token ids -> text deltas, cut at the first stop string.

Decoding is incremental: each token decodes a short window, the tokens since the last settled
text plus the one before them for context (SentencePiece-style tokenizers only place spaces
right in context), so a reply of n tokens costs O(n) decoding, not O(n^2). Text that ends in an
incomplete UTF-8 sequence waits in the window until the next token settles it; text that could
still become a stop string is held back.
"""

from __future__ import annotations

from collections.abc import Sequence

INCOMPLETE = "\ufffd"


class TextStream:
    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""  # settled text (cut at a stop string once one is reached)
        self.sent = 0  # characters of `text` already handed out
        self._context = 0  # ids[_context:_settled] decode to the end of `text`: the context
        self._settled = 0  # ids before this are in `text`

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; return (new text to hand out, whether a stop string was reached)."""
        self.ids.append(token_id)
        new = self._unsettled()
        if new and not new.endswith(INCOMPLETE):
            self.text += new
            self._context, self._settled = self._settled, len(self.ids)
        if self._cut_at_stop():
            return self._advance(len(self.text)), True
        return self._advance(len(self.text) - self._held_back()), False

    def flush(self) -> str:
        """The rest of the text, once the reply is over (an incomplete character included)."""
        self.text += self._unsettled()
        self._settled = len(self.ids)
        self._cut_at_stop()
        return self._advance(len(self.text))

    def _unsettled(self) -> str:
        """The text of the tokens after `_settled`, decoded after their context."""
        # No space clean-up: it can change text already handed out ("a ," -> "a,").
        window = self._decode(self.ids[self._context :])
        return window[len(self._decode(self.ids[self._context : self._settled])) :]

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        return self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    def _advance(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta, self.sent = self.text[self.sent : upto], upto
        return delta

    def _cut_at_stop(self) -> bool:
        hits = []
        for s in self.stop:
            # A stop string can only newly appear overlapping the text not yet handed out.
            i = self.text.find(s, max(0, self.sent - len(s) + 1))
            if i >= 0:
                hits.append(i)
        if not hits:
            return False
        self.text = self.text[: min(hits)]
        return True

    def _held_back(self) -> int:
        """Characters at the end that the next token may still turn into a stop string."""
        partial = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    partial = max(partial, k)
                    break
        return partial
