"""Publish an exported model folder to the Hugging Face Hub (or any Hub-compatible server via HF_ENDPOINT).

    python -m hub.push FOLDER ORG/NAME [--tag v1] [--branch dev] [--private] [--message "..."]

The token comes from the standard huggingface_hub login (``hf auth login``) or ``HF_TOKEN``; it is never
printed or written anywhere by this code.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError

from medssl_zoo.hub.card import REPO_PLACEHOLDER
from zoo.hub_format import CARD_FILE, CONFIG_FILE, PLOT_FILE, WEIGHTS_FILE, read_config
from zoo.registry import is_hub_id
from zoo.revision import check_revision

__all__ = ["PushError", "push"]

log = logging.getLogger(__name__)


class PushError(RuntimeError):
    """The upload failed; the message says why and what to do (log in, set HF_TOKEN / HF_ENDPOINT)."""


def _network_errors() -> tuple[type[BaseException], ...]:
    """OSError plus the HTTP client's own error base classes (httpx2 for huggingface_hub 2.x, httpx for 1.x)."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _explain(error: BaseException, endpoint: str) -> PushError:
    """One line for a failed Hub call."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return PushError(
            f"the Hub at {endpoint} refused the credentials (HTTP {status}): log in with `hf auth login` or set "
            "HF_TOKEN to a token with write access to the repository"
        )
    if isinstance(error, HfHubHTTPError):
        first = str(error).splitlines()[0][:200]
        return PushError(f"the Hub at {endpoint} answered HTTP {status}: {first}")
    return PushError(
        f"cannot reach the Hub at {endpoint} ({type(error).__name__}: {str(error)[:200]}); check the network, or "
        "set HF_ENDPOINT to a reachable Hub or mirror"
    )


def _check_can_push(api: HfApi) -> None:
    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: unset it (and be online) to push to the Hub")
    if not (isinstance(api.token, str) or get_token()):
        raise PushError(
            "no Hub token: log in with `hf auth login` or set HF_TOKEN (a token with write access)"
        )


def _check_folder(folder: Path) -> dict:
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE) if not (folder / f).is_file()]
    if missing:
        raise ValueError(
            f"{folder} is not an exported model folder: missing {missing} (run python -m hub.export)"
        )
    return read_config(folder / CONFIG_FILE)


def _operations(folder: Path, repo_id: str) -> list[CommitOperationAdd]:
    """The export's files; the model card with its usage lines pointing at ``repo_id`` (an export made before its
    repository was known says ``<org>/<name>`` there)."""
    card = re.sub(
        re.escape(REPO_PLACEHOLDER) + r"[A-Za-z0-9._-]+", repo_id, (folder / CARD_FILE).read_text("utf-8")
    )
    files = [name for name in (WEIGHTS_FILE, CONFIG_FILE, PLOT_FILE) if (folder / name).is_file()]
    return [CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8"))] + [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files
    ]


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
    if not is_hub_id(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repository id (org/name)")
    check_revision(tag, "--tag")
    check_revision(branch, "--branch")
    config = _check_folder(folder)
    api = api or HfApi()
    _check_can_push(api)
    try:
        return _upload(folder, repo_id, config, api, tag=tag, branch=branch, private=private, message=message)
    except (HfHubHTTPError, *_network_errors()) as e:
        raise _explain(e, api.endpoint or constants.ENDPOINT) from e


def _upload(
    folder: Path, repo_id: str, config: dict, api: HfApi, *, tag, branch, private: bool, message
) -> str:
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if branch:
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    meta = config.get("zoo", {})
    default_message = (
        f"Upload {meta.get('method', '?')} on {meta.get('dataset', '?')} ({config['architecture']}, "
        f"seed {meta.get('seed')}, split {str(meta.get('split_manifest_sha256', ''))[:12]})"
    )
    commit = api.create_commit(
        repo_id=repo_id,
        operations=_operations(folder, repo_id),
        commit_message=message or default_message,
        revision=branch,
    )
    sha = commit.oid
    if tag:
        api.create_tag(repo_id, tag=tag, revision=sha, tag_message=f"{repo_id} {tag}", exist_ok=True)
    log.info("pushed %s to %s@%s%s", folder, repo_id, sha, f" (tag {tag})" if tag else "")
    return sha


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hub.push",
        description="Push an exported model folder to the Hugging Face Hub (or the Hub-compatible server at "
        "HF_ENDPOINT) as one commit; prints the commit sha to pin. Token: `hf auth login` or HF_TOKEN.",
    )
    parser.add_argument("folder", type=Path, help="an exported folder (python -m hub.export)")
    parser.add_argument("repo_id", help="the Hub repository, org/name (created if missing)")
    parser.add_argument("--tag", help="also tag the new commit (e.g. v1)")
    parser.add_argument("--branch", help="commit to this branch (created if missing) instead of main")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--message", help="commit message (default: method, dataset, seed and split hash)")
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
    except (ValueError, PushError) as e:
        log.error("%s", e)
        return 2
    print(json.dumps({"repo_id": args.repo_id, "commit": sha, "tag": args.tag, "branch": args.branch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
