"""The one order in which erasers are stacked in front of a prompt.

Stacking is not symmetric ([a; b; prompt] and [b; a; prompt] answer differently), so the server
stacks a request's erasers in this order, whatever order the request lists them in, and training
stacks an eraser with its partners in the same order: a set of erasers has one layout, the one it
was trained in.
"""

from __future__ import annotations


def stack_key(behavior: str, name: str, version: int = 0) -> tuple[str, str, int]:
    """Sort key of an eraser in a stack, first (farthest from the prompt) to last: by behavior
    name, then eraser name and version."""
    return behavior, name, version
