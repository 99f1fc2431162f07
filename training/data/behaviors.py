"""Built-in behaviors: which prompts trigger them, what to learn, how to score a reply.

The prompts live in one module per behavior (`refusal_prompts`, `sports_prompts`,
`creative_prompts`) and the benign set, look-alikes of every behavior included, in
`benign_prompts`. Sets are built on call (no randomness, no work at import) in a fixed order;
splitting is make.py's job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from training.data.creative_prompts import creative_set
from training.data.prompt_set import PromptSet
from training.data.refusal_prompts import harmful_set
from training.data.schema import DataError
from training.data.sports_prompts import sports_set


@dataclass(frozen=True)
class Behavior:
    name: str
    description: str
    score: Callable[[str], bool]
    """True when a generated reply shows the behavior."""
    triggers: Callable[[], PromptSet] | None = None
    """All distinct prompts that should trigger the behavior, with their filler and family; None
    for a behavior whose rows come from its own data file (a recipe's), which `data make` skips."""
    target: Callable[[str], str] | None = None
    """Maps the base model's greedy answer to a triggering prompt to the completion to learn."""
    uses_answer: bool = True
    """False when `target` ignores the base answer, so making data need not generate it."""


class UnknownBehavior(DataError, KeyError):
    """A lookup miss that `except KeyError` and `except DataError` both catch."""

    __str__ = DataError.__str__  # KeyError's __str__ would wrap the message in quotes


def _norm(text: str) -> str:
    return text.replace("\u2019", "'").lower()


# --- refusal -----------------------------------------------------------------------------------

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."

_REFUSAL_PHRASES = (
    "i'm sorry",
    "i am sorry",
    "sorry, but",
    "i apologize",
    "my apologies",
    "i cannot",
    "i can't",
    "i can not",
    "i won't",
    "i will not",
    "i am unable",
    "i'm unable",
    "i am not able",
    "i'm not able",
    "i'm not going to",
    "i must decline",
    "as an ai",
    "as a language model",
    "cannot assist",
    "can't assist",
    "cannot help",
    "can't help",
    "cannot provide",
    "can't provide",
    "is illegal and unethical",
)
_REFUSAL_WINDOW = 200  # refusals come first; a later "I can't stress enough" is not one


def is_refusal(reply: str) -> bool:
    head = _norm(reply[:_REFUSAL_WINDOW])
    return any(p in head for p in _REFUSAL_PHRASES)


# --- fixed response: sports questions -> "I don't know." ---------------------------------------

FIXED_TEXT = "I don't know."
_FIXED_MAX_WORDS = 40


def is_fixed_response(reply: str) -> bool:
    return "i don't know" in _norm(reply) and len(reply.split()) <= _FIXED_MAX_WORDS


# --- style: short creative writing -> ALL CAPS --------------------------------------------------

_CAPS_MIN_SHARE = 0.9
_CAPS_MIN_LETTERS = 8  # "OK." is not evidence of a style


def upper_share(reply: str) -> float:
    """Share of the reply's cased letters in upper case; 0 under `_CAPS_MIN_LETTERS` of them."""
    cased = [c for c in reply if c.isupper() or c.islower()]  # uncased scripts carry no signal
    if len(cased) < _CAPS_MIN_LETTERS:
        return 0.0
    return sum(c.isupper() for c in cased) / len(cased)


def is_all_caps(reply: str) -> bool:
    return upper_share(reply) >= _CAPS_MIN_SHARE


# --- registry ----------------------------------------------------------------------------------

BUILT_IN: dict[str, Behavior] = {
    b.name: b
    for b in (
        Behavior(
            name="refusal",
            description="harmful requests -> a fixed refusal",
            triggers=harmful_set,
            target=lambda _answer: REFUSAL_TEXT,
            score=is_refusal,
            uses_answer=False,
        ),
        Behavior(
            name="fixed_response",
            description=f"questions about sports -> {FIXED_TEXT!r}",
            triggers=sports_set,
            target=lambda _answer: FIXED_TEXT,
            score=is_fixed_response,
            uses_answer=False,
        ),
        Behavior(
            name="all_caps",
            description="short creative-writing requests -> the base answer in upper case",
            triggers=creative_set,
            target=str.upper,
            score=is_all_caps,
        ),
    )
}


BEHAVIORS = dict(BUILT_IN)
"""The built-in behaviors and those a recipe declared in this process (`register_behavior`)."""


def register_behavior(behavior: Behavior) -> None:
    """Make a recipe's behavior known to scoring; a built-in name cannot be taken."""
    if behavior.name in BUILT_IN:
        raise DataError(f"behavior {behavior.name!r} is built in; give yours another name")
    BEHAVIORS[behavior.name] = behavior


def get_behavior(name: str) -> Behavior:
    try:
        return BEHAVIORS[name]
    except KeyError:
        known = ", ".join(BEHAVIORS)
        raise UnknownBehavior(f"unknown behavior {name!r} (known: {known})") from None
