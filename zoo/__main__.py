"""``python -m zoo list [PATTERN] | info NAME | load NAME`` — the model zoo from the shell."""

from __future__ import annotations

import argparse
import json
import sys

import zoo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo", description="MedSSL Zoo models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered and locally exported models").add_argument("pattern", nargs="?")
    for name in ("info", "load"):
        p = sub.add_parser(name, help=f"{name} a model (name, folder or org/repo)")
        p.add_argument("model")
        p.add_argument("--revision")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            local = set(zoo.registry.local_models())
            for name in zoo.list_models(args.pattern):
                entry = zoo.registry.get_entry(name)
                where = (
                    "local"
                    if name in local
                    else (entry.repo_id if entry.published else f"{entry.repo_id} (not published)")
                )
                print(f"{name:28s} {where}")
        elif args.command == "info":
            print(json.dumps(zoo.model_info(args.model, revision=args.revision), indent=2, default=str))
        else:
            model = zoo.load(args.model, revision=args.revision)
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
