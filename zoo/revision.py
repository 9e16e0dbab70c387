"""Hub revisions, checked once before any of them reaches huggingface_hub.

huggingface_hub stores the commit a branch or tag resolved to in ``<cache>/refs/<revision>``: a revision such as
``../../../../home/user/.bashrc`` would make it write outside its cache, with content chosen by whatever server
answered (its ``X-Repo-Commit`` header). Every revision the project hands on (``zoo.load(revision=...)``, registry
entries, ``$ZOO_REGISTRY``, the demo's choices, ``hub.push``'s branch and tag, the commit a download resolved to)
passes :func:`check_revision`: a 40-hex commit, or a branch / tag name by git's ref-name rules
(``git check-ref-format --allow-onelevel``), which rule out ``..``, a leading ``/`` and NUL or backslash; a
leading ``-`` is refused as well (it reads as an option to git tools).
"""

from __future__ import annotations

import re

__all__ = ["COMMIT_SHA", "MAX_REVISION_LENGTH", "check_commit", "check_revision"]

COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
MAX_REVISION_LENGTH = 255
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")  # control characters, space, ~ ^ : ? * [ and backslash


def _ref_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid git ref name (git check-ref-format --allow-onelevel), or None."""
    if not name:
        return "it is empty"
    if len(name) > MAX_REVISION_LENGTH:
        return f"it is longer than {MAX_REVISION_LENGTH} characters"
    if _FORBIDDEN.search(name):
        return "it holds a control character, a space, a backslash or one of ~ ^ : ? * ["
    if name.startswith(("/", "-")) or name.endswith(("/", ".")):
        return "it starts with / or - or ends with / or ."
    if ".." in name or "//" in name or "@{" in name or name == "@":
        return "it holds '..', '//' or '@{', or is '@'"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "a part of it starts with '.' or ends with '.lock'"
    return None


def check_revision(revision: str | None, what: str = "revision") -> str | None:
    """``revision`` unchanged when it is None, a 40-hex commit or a valid branch / tag name; otherwise a
    ``ValueError`` naming ``what`` (e.g. "registry entry vicreg-breast: revision") and the rule it breaks."""
    if revision is None:
        return None
    if not isinstance(revision, str):
        raise ValueError(f"{what} must be a branch, tag or commit sha (text), got {type(revision).__name__}")
    problem = _ref_name_problem(revision)
    if problem:
        raise ValueError(
            f"{what} {revision[:80]!r} is not a branch, tag or commit sha: {problem}. Use a 40-character commit "
            "sha, or a branch / tag name such as main or v1.0"
        )
    return revision


def check_commit(commit: str, what: str = "commit") -> str:
    """A resolved commit must be 40 lower-case hex digits (what a Hub server answered is checked too)."""
    if not (isinstance(commit, str) and COMMIT_SHA.match(commit)):
        raise ValueError(f"{what} {str(commit)[:80]!r} is not a 40-character commit sha")
    return commit
