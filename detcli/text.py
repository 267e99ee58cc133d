"""Small text helpers shared by the library's messages and the CLI."""

from __future__ import annotations


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 problem``, ``2 problems``, ``0 boxes`` (``many`` when adding "s" is wrong)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"
