"""Publish an exported model folder to the Hugging Face Hub (or any Hub-compatible server via HF_ENDPOINT).

    medssl-push FOLDER ORG/NAME [--tag v1] [--branch dev] [--private] [--message "..."]

The token comes from the standard huggingface_hub login (``hf auth login``) or ``HF_TOKEN``; it is never
printed or written anywhere by this code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from contextlib import ExitStack
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError

import zoo
from medssl_zoo.hub.card import REPO_PLACEHOLDER
from zoo.files import open_regular
from zoo.hub_format import (
    CARD_FILE,
    EXPORT_FILES,
    HEAD_FILE,
    MODEL_CONFIG_FILE,
    OOD_FILE,
    PLOT_FILE,
    WEIGHTS_FILE,
    read_config,
)
from zoo.messages import first_line
from zoo.registry import is_hub_id
from zoo.revision import check_revision

__all__ = ["PushError", "push"]

log = logging.getLogger(__name__)
MAX_CARD_BYTES = 1024 * 1024  # a model card is a few kB of Markdown
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
        first = first_line(error)
        return PushError(f"the Hub at {endpoint} answered HTTP {status}: {first}")
    return PushError(
        f"cannot reach the Hub at {endpoint} ({type(error).__name__}: {first_line(error)}); check the network, or "
        "set HF_ENDPOINT to a reachable Hub or mirror"
    )


def _check_can_push(api: HfApi) -> None:
    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: unset it (and be online) to push to the Hub")
    if not (isinstance(api.token, str) or get_token()):
        raise PushError(
            "no Hub token: log in with `hf auth login` or set HF_TOKEN (a token with write access)"
        )


def _export_entries(folder: Path) -> list[str]:
    """The export files present in ``folder``, each checked to be a regular file (a link or anything else among
    them is refused, naming it); other entries are not uploaded (a warning names them)."""
    if not folder.is_dir():
        raise ValueError(
            f"{folder} is not a folder; give an exported model folder (medssl-export RUN_DIR OUT_DIR)"
        )
    names = sorted(os.listdir(folder))
    present = [n for n in names if n in EXPORT_FILES]
    for name in present:
        path = folder / name
        if path.is_symlink() or not path.is_file():
            kind = "a symbolic link" if path.is_symlink() else "not a regular file"
            raise ValueError(
                f"{path} is {kind}: push uploads only the export's own regular files, never what a link points "
                "to; re-export the model (medssl-export RUN_DIR OUT_DIR) or put the file itself there"
            )
    weights = HEAD_FILE if HEAD_FILE in present and WEIGHTS_FILE not in present else WEIGHTS_FILE
    missing = [f for f in (weights, MODEL_CONFIG_FILE, CARD_FILE) if f not in present]
    if missing:
        raise ValueError(
            f"{folder} is not an exported model folder: missing {missing} (run medssl-export RUN_DIR OUT_DIR)"
        )
    others = [n for n in names if n not in EXPORT_FILES]
    if others:
        log.warning("not uploaded (not export files): %s", ", ".join(others[:10]))
    return present


def _check_terms(folder: Path, present: list[str]) -> None:
    """Weights built on a catalogue encoder whose licence forbids redistribution are never published: only a
    head-only export (``head.safetensors`` + the pinned reference) of it is."""
    base = (read_config(folder / MODEL_CONFIG_FILE).get("zoo") or {}).get("base_model")
    if isinstance(base, dict) and base.get("redistribute") is False and WEIGHTS_FILE in present:
        raise ValueError(
            f"{folder} holds weights built on {base.get('name')} ({base.get('license_name') or base.get('license')}),"
            " whose licence forbids redistributing them or anything derived from them; publish a head on the frozen"
            f" encoder instead: medssl-export --base {base.get('name')} --dataset imagefolder --data-root DIR OUT"
        )


def _check_folder(folder: Path) -> tuple[dict, list[str]]:
    """(config, the files to upload): the folder is verified as ``zoo.load`` reads it (config.json validated,
    the model built on the meta device and compared with the safetensors header, then loaded strictly), so what
    is published loads; ``ValueError`` naming the problem otherwise."""
    present = _export_entries(folder)
    try:
        zoo.load(folder, local_paths=True)  # zoo.load's own checks, not a copy of them
    except ValueError as e:
        raise ValueError(f"{folder} cannot be published: {e}") from e
    _check_terms(folder, present)
    return read_config(folder / MODEL_CONFIG_FILE), present


def _card_text(folder: Path, repo_id: str) -> bytes:
    """The model card with its usage lines pointing at ``repo_id`` (an export made before its repository was known
    says ``<org>/<name>`` there)."""
    with open_regular(folder / CARD_FILE, "model card", follow_links=False, limit=MAX_CARD_BYTES) as f:
        try:
            text = f.read(MAX_CARD_BYTES + 1).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{folder / CARD_FILE} is not UTF-8 text ({e.reason}); re-export the model"
            ) from e
    card = re.sub(re.escape(REPO_PLACEHOLDER) + r"[A-Za-z0-9._-]+", repo_id, text)
    return card.encode("utf-8")


def _operations(folder: Path, files: list[str], repo_id: str, stack: ExitStack) -> list[CommitOperationAdd]:
    """One upload per export file, each read from the regular file that was checked (opened without following
    links: a link swapped in after the checks is refused, not published); ``stack`` closes them."""
    operations = [CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=_card_text(folder, repo_id))]
    for name in (WEIGHTS_FILE, MODEL_CONFIG_FILE, PLOT_FILE, OOD_FILE):
        if name in files:
            f = stack.enter_context(open_regular(folder / name, name, follow_links=False))
            if name == PLOT_FILE and f.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                raise ValueError(f"{folder / name} is not a PNG image; re-export the model")
            f.seek(0)
            operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=f))
    return operations


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
    config, files = _check_folder(folder)
    api = api or HfApi()
    _check_can_push(api)
    with ExitStack() as stack:
        operations = _operations(folder, files, repo_id, stack)
        try:
            return _upload(
                repo_id, config, operations, api, tag=tag, branch=branch, private=private, message=message
            )
        except (HfHubHTTPError, *_network_errors()) as e:
            raise _explain(e, api.endpoint or constants.ENDPOINT) from e


def _upload(
    repo_id: str, config: dict, operations: list, api: HfApi, *, tag, branch, private: bool, message
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
        operations=operations,
        commit_message=message or default_message,
        revision=branch,
    )
    sha = commit.oid
    if tag:
        api.create_tag(repo_id, tag=tag, revision=sha, tag_message=f"{repo_id} {tag}", exist_ok=True)
    log.info(
        "pushed %s to %s@%s%s",
        [op.path_in_repo for op in operations],
        repo_id,
        sha,
        f" (tag {tag})" if tag else "",
    )
    return sha


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="medssl-push",
        description="Push an exported model folder to the Hugging Face Hub (or the Hub-compatible server at "
        "HF_ENDPOINT) as one commit; prints the commit sha to pin. Token: `hf auth login` or HF_TOKEN.",
    )
    parser.add_argument("folder", type=Path, help="an exported folder (medssl-export RUN_DIR OUT_DIR)")
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
