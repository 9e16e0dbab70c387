"""Publish an exported model folder to the Hugging Face Hub (or any Hub-compatible server via HF_ENDPOINT).

    python -m hub.push FOLDER ORG/NAME [--tag v1] [--branch dev] [--private] [--message "..."]

The token comes from the standard huggingface_hub login (``hf auth login``) or ``HF_TOKEN``; it is never
printed or written anywhere by this code.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from huggingface_hub import HfApi

from zoo.hub_format import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, read_config

__all__ = ["push"]

log = logging.getLogger(__name__)


def _check_folder(folder: Path) -> dict:
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE) if not (folder / f).is_file()]
    if missing:
        raise ValueError(
            f"{folder} is not an exported model folder: missing {missing} (run python -m hub.export)"
        )
    return read_config(folder / CONFIG_FILE)


def push(
    folder: str | Path,
    repo_id: str,
    *,
    tag: str | None = None,
    branch: str | None = None,
    private: bool = False,
    message: str | None = None,
    api: HfApi | None = None,
) -> str:
    """Create ``repo_id`` if needed, upload ``folder`` as one commit (on ``branch`` if given), tag it; returns the
    commit sha (pin it in the registry for reproducible downloads)."""
    folder = Path(folder)
    config = _check_folder(folder)
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if branch:
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    meta = config.get("zoo", {})
    default_message = (
        f"Upload {meta.get('method', '?')} on {meta.get('dataset', '?')} ({config['architecture']}, "
        f"seed {meta.get('seed')}, split {str(meta.get('split_manifest_sha256', ''))[:12]})"
    )
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        revision=branch,
        commit_message=message or default_message,
        allow_patterns=[WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, "*.png"],
    )
    sha = commit.oid
    if tag:
        api.create_tag(repo_id, tag=tag, revision=sha, tag_message=f"{repo_id} {tag}")
    log.info("pushed %s to %s@%s%s", folder, repo_id, sha, f" (tag {tag})" if tag else "")
    return sha


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Push an exported model folder to the Hub.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id")
    parser.add_argument("--tag")
    parser.add_argument("--branch")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--message")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        sha = push(
            args.folder,
            args.repo_id,
            tag=args.tag,
            branch=args.branch,
            private=args.private,
            message=args.message,
        )
    except ValueError as e:
        log.error("%s", e)
        return 2
    print(json.dumps({"repo_id": args.repo_id, "commit": sha, "tag": args.tag, "branch": args.branch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
