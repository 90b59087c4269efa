"""Small helpers that every implementation and the harness share (the harness may import implementations; an
implementation never imports the harness)."""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (its type's name when it has none), for a one-sentence report."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:limit]
