"""``medssl-zoo list [PATTERN] | info NAME | load NAME`` (or ``python -m zoo``) — the model zoo from the shell."""

from __future__ import annotations

import argparse
import json
import sys

import zoo
from zoo.catalogue import CatalogueEntry, catalogue_entry


def _where(name: str, entry, local: set[str]) -> str:
    if name in local:
        return "local"
    if isinstance(entry, CatalogueEntry):
        access = "gated" if entry.gated else "open"
        return (
            f"{entry.repo_id:44s} {entry.modality:14s} {entry.width:5d}-d {entry.params / 1e6:8.1f} M  "
            f"{entry.license_name or entry.license:16s} {access}"
        )
    return entry.repo_id if entry.published else f"{entry.repo_id} (not published)"


def _list(pattern: str | None) -> None:
    """One line per model: the catalogue's with modality, embedding width, parameters, licence, gated state."""
    local = set(zoo.registry.local_models())
    for name in zoo.list_models(pattern):
        print(f"{name:20s} {_where(name, zoo.registry.get_entry(name), local)}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medssl-zoo", description="MedSSL Zoo models.")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="registered and locally exported models")
    listing.add_argument("pattern", nargs="?", help="a shell pattern such as 'vicreg-*'")
    helps = {
        "info": "show a model's registry entry and config (downloads config.json only; a catalogue entry's facts "
        "without any download)",
        "load": "load a model and print its architecture, size and classes",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("model", help="a zoo name, an exported folder or a Hub repo id (org/name)")
        p.add_argument("--revision", help="a branch, tag or 40-character commit sha")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            _list(args.pattern)
        elif args.command == "info":
            print(json.dumps(zoo.model_info(args.model, revision=args.revision), indent=2, default=str))
        else:
            encoder = catalogue_entry(args.model) is not None  # no classifier: its features
            model = zoo.load(args.model, revision=args.revision, features_only=encoder)
            n = sum(p.numel() for p in model.parameters())
            print(
                f"{args.model}: {model.pretrained_cfg.get('architecture', type(model).__name__)}, {n / 1e6:.2f} M "
                f"parameters, classes {model.label_names}, input {model.pretrained_cfg['input_size']} from {model.source}"
            )
    except (zoo.ModelNotAvailableError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
