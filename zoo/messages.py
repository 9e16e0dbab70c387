"""Other libraries' errors inside our one-line messages: their first line, cut at a word, never mid-word."""

from __future__ import annotations

__all__ = ["first_line"]


def first_line(error: BaseException | str, limit: int = 200, line: int = 0) -> str:
    """Line ``line`` of ``error``'s text (its type name when it has none), at most ``limit`` characters, shortened
    at the last space with "…" (huggingface_hub's "… Please check your connection and try aga" was cut mid-word)."""
    lines = [text.strip() for text in str(error).strip().splitlines() if text.strip()]
    text = lines[min(line, len(lines) - 1)] if lines else type(error).__name__
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return f"{cut or text[:limit]}…"
