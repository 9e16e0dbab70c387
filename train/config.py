"""Where a run's configuration comes from: YAML recipes overridden by command-line flags.

The configuration itself (fields, defaults, help, validation) is :class:`zoo.run_config.RunConfig`, the schema of a
run's ``config.yaml``. Here: *recipes* (YAML files of configuration keys, one shipped in ``recipes/`` beside this
module, or any path; a recipe may ``extends:`` another), the embedded default, the flags (one per field, with
config.yaml's spelling accepted and close names suggested), and the resolved configuration a run stores.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import textwrap
import typing
from pathlib import Path

from medssl_zoo.train.tracking import TRACKERS, parse_trackers
from zoo.files import load_yaml, read_yaml
from zoo.run_config import GROUPS, RunConfig, build
from zoo.run_dir import is_run, read_run

__all__ = ["GROUPS", "PretrainConfig", "RECIPE_DIR", "RESUMABLE_CHANGES", "load_config", "parse_args"]

log = logging.getLogger("train")
RECIPE_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = RECIPE_DIR / "default.yaml"
# fields that may differ between a checkpoint and the run that resumes it
RESUMABLE_CHANGES = {
    "output_dir",
    "cache",
    "eval_data_root",
    "compile",
    "loader_workers",
    "input_overlap",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_with",
    "log_every",
    "num_threads",
    "data_root",
    "progress",
    "export_name",
}


PretrainConfig = RunConfig  # the name the training code uses for a run's configuration
_DEFAULTS = RunConfig.defaults()


MAX_RECIPE_BYTES = 256 * 1024  # the longest recipe here is ~1 KB; a 20 MB one took 11 s to parse
PATH_KEYS = ("data_root", "eval_data_root", "split_manifest", "init_weights", "output_dir")


MAX_EXTENDS = 4  # how deep recipes may extend one another


def _recipe_path(recipe: str | Path, beside: Path | None = None) -> Path:
    """A recipe file: a path, a name beside the recipe that extends it, or the name of a shipped recipe."""
    path = Path(recipe).expanduser()
    for candidate in ([beside / f"{recipe}.yaml"] if beside else []) + [RECIPE_DIR / f"{recipe}.yaml"]:
        if not path.exists() and candidate.is_file():
            path = candidate  # a recipe name such as vicreg-breast
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))
        raise ValueError(f"recipe {recipe} not found; give a YAML path or one of: {names}")
    return path


def _read_recipe(recipe: str | Path | None, chain: tuple[Path, ...] = ()) -> tuple[dict, Path]:
    """A recipe's values, with what it ``extends`` (another recipe, e.g. the study's base) underneath."""
    path = _recipe_path(recipe, chain[-1].parent if chain else None) if recipe else DEFAULT_RECIPE
    values = read_yaml(path, MAX_RECIPE_BYTES, "recipe") or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of configuration keys")
    parent = values.pop("extends", None)
    if parent is None:
        return values, path
    if path in chain or len(chain) >= MAX_EXTENDS:
        raise ValueError(f"{path}: 'extends' goes round in a circle or deeper than {MAX_EXTENDS} recipes")
    if not isinstance(parent, str):
        raise ValueError(f"{path}: extends must name one recipe, got {parent!r}")
    base, _ = _read_recipe(parent, (*chain, path))
    return {**base, **values}, path


def uses_default_recipe(recipe: str | Path | None, overrides: dict) -> bool:
    """Whether a run starts from the embedded default recipe: only without ``--recipe`` and for the synthetic
    tiles it was written for. A run that names another dataset starts from the built-in defaults (the study's
    setting), never from the synthetic demo's sizes, options and export name."""
    return recipe is None and overrides.get("dataset", "synthetic") == "synthetic"


def _starting_values(recipe, overrides: dict, base: dict | None) -> tuple[dict, str]:
    """(values before the flags, where they come from) — see :func:`load_config`."""
    if base is not None and recipe is None:
        return dict(base), "the run's config.yaml"
    if recipe is None and not uses_default_recipe(recipe, overrides):
        return {}, "the built-in defaults"
    values, path = _read_recipe(recipe)
    if values.get("export_name") and any(
        k in overrides and overrides[k] != values.get(k, _DEFAULTS[k]) for k in ("method", "dataset")
    ):
        log.info(
            "not exporting as %s (recipe %s): this run trains another method or dataset; pass --export-name NAME "
            "to export it",
            values["export_name"],
            path.name,
        )
        values = {k: v for k, v in values.items() if k != "export_name"}
    return values, path.name


def _absolute_paths(values: dict) -> dict:
    """Paths stored absolute (a run resumed or evaluated from another directory finds them); a local folder given
    as ``init`` too."""
    out = dict(values)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = os.path.abspath(os.path.expanduser(out[key]))
    if isinstance(out.get("init"), str) and Path(out["init"]).expanduser().is_dir():
        out["init"] = os.path.abspath(os.path.expanduser(out["init"]))
    return out


def load_config(
    recipe: str | Path | None = None, overrides: dict | None = None, base: dict | None = None
) -> PretrainConfig:
    """Read a YAML recipe, or start from ``base`` (a run's stored configuration), apply ``overrides``, validate.

    Without a recipe, the embedded default recipe is the start for the synthetic tiles, the built-in defaults for
    any other dataset (:func:`uses_default_recipe`); a recipe's ``export_name`` is dropped when the flags change its
    method or dataset (an export name is never reused by a run it was not written for). Unknown keys are an error
    (never silently ignored); relative paths are stored absolute.
    """
    overrides = dict(overrides or {})
    values, source = _starting_values(recipe, overrides, base)
    values.update(overrides)
    unknown = sorted(set(values) - set(RunConfig.model_fields))
    if unknown:
        raise ValueError(
            f"unknown configuration keys {unknown} (in {source} or the flags); valid keys: "
            f"{', '.join(sorted(RunConfig.model_fields))}"
        )
    cfg = build(_absolute_paths(values))
    parse_trackers(cfg.log_with)  # the tracker names (the packages are checked when the run starts)
    return cfg


def _text_value(text: str):
    """A flag's value for a text field: taken as written (``--mixed-precision no`` is the text "no", not YAML's
    False); ``null`` is None."""
    return None if text in ("null", "~") else text


def _yaml_value(text: str):
    """A flag's value, parsed as YAML (numbers, booleans, lists, mappings, null; no aliases)."""
    try:
        return load_yaml(text, f"the value {text[:60]!r}")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


# flag names people type for another tool's key → this project's
SYNONYMS = {
    "learning-rate": "lr",
    "base-lr": "lr",
    "steps": "max-steps",
    "iterations": "max-steps",
    "model": "backbone",
    "arch": "backbone",
    "architecture": "backbone",
    "data": "data-root",
    "data-dir": "data-root",
    "dataset-root": "data-root",
    "output": "output-dir",
    "out-dir": "output-dir",
    "batch": "batch-size",
    "bs": "batch-size",
    "wd": "weight-decay",
    "img-size": "image-size",
    "input-size": "image-size",
    "workers": "loader-workers",
    "threads": "num-threads",
}


DESCRIPTION = "\n\n".join(
    textwrap.fill(paragraph, 100)
    for paragraph in (
        "Self-supervised pre-training. Run it as `medssl-pretrain` (one process), `accelerate launch -m "
        "medssl_zoo.train.pretrain` (several processes or GPUs), or in a checkout `accelerate launch "
        "train/pretrain.py`.",
        "Where values come from: flags override a recipe (--recipe), which overrides the built-in defaults below "
        "(the study's setting). Without --recipe, a run on the synthetic tiles starts from the embedded default "
        "recipe (shown as 'default recipe' below: a 2-minute CPU demo that exports simclr-synthetic); a run on any "
        "other --dataset starts from the built-in defaults.",
        "Values are YAML: --crop-scale [0.2,1], --dataset-options '{num_images: 400}', --max-steps null. "
        "config.yaml's spelling of a key (--max_steps) works too.",
    )
)


class SuggestingParser(argparse.ArgumentParser):
    """argparse that accepts config.yaml's spelling of a key (``--max_steps``) and, for an unknown flag, names the
    closest valid ones (``--learning-rate`` → ``--lr``)."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(args if args is not None else sys.argv[1:])
        known = {o for a in self._actions for o in a.option_strings}
        args = [_dashed(a) if _dashed(a).split("=", 1)[0] in known else a for a in args]
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            known = sorted({o for a in self._actions for o in a.option_strings if o.startswith("--")})
            hints = [_suggest(a, known) for a in message.split(":", 1)[1].split() if a.startswith("-")]
            message += "".join(f"\n  {h}" for h in hints if h)
        super().error(message + f"\n(`{self.prog} --help` lists every option)")


def _dashed(arg: str) -> str:
    """``--max_steps`` → ``--max-steps`` (``--key=value`` forms too); other arguments unchanged."""
    if not arg.startswith("--"):
        return arg
    flag, eq, value = arg.partition("=")
    return flag.replace("_", "-") + eq + value


def _suggest(arg: str, known: list[str]) -> str | None:
    flag = _dashed(arg).split("=", 1)[0]
    synonym = SYNONYMS.get(flag.lstrip("-"))
    close = [f"--{synonym}"] if synonym else difflib.get_close_matches(flag, known, n=3, cutoff=0.6)
    return f"{arg}: did you mean {' or '.join(close)}?" if close else None


def _default_recipe_values() -> dict:
    try:
        return _read_recipe(None)[0]
    except ValueError:
        return {}


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(
        prog="medssl-pretrain",
        usage="%(prog)s [--recipe RECIPE] [--resume [latest|CHECKPOINT]] [--halt-at-step N] [--processes N] "
        "[--KEY VALUE ...]",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--recipe",
        "--config",
        dest="recipe",
        help="a YAML recipe file, or the name of a recipe shipped with the package (e.g. vicreg-breast, "
        "simclr-crc-paper; an unknown name lists them all); with --resume and no recipe: the run's own config.yaml",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="latest|CHECKPOINT",
        help="continue the run in --output-dir: from its newest intact checkpoint (latest) or a given "
        "checkpoints/step_* folder; a run without checkpoints starts afresh",
    )
    parser.add_argument(
        "--halt-at-step",
        type=int,
        metavar="N",
        help="stop after step N with a checkpoint (for time-limited job slots); continue with --resume",
    )
    parser.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run N local processes (CPU cores or GPUs) without `accelerate launch`; a failure ends with the "
        "program's one-line error and exit code (default: 1)",
    )
    groups = {name: parser.add_argument_group(title) for name, title in GROUPS.items()}
    choices = {**RunConfig.choices(), "log_with": ("none", *TRACKERS)}
    recipe = _default_recipe_values()
    for name, field in RunConfig.model_fields.items():
        is_text = _is_text(field.annotation)
        valid = f" One of: {', '.join(map(str, choices[name]))}." if name in choices else ""
        default = f"default: {_shown(_DEFAULTS[name])}"
        if name in recipe and recipe[name] != _DEFAULTS[name]:
            default += f"; default recipe: {_shown(recipe[name])}"
        groups[field.json_schema_extra["group"]].add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=_text_value if is_text else _yaml_value,
            default=argparse.SUPPRESS,
            metavar=name.upper(),
            help=f"{field.description}.{valid} ({default})",
        )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of processes")
    return value


def _is_text(annotation) -> bool:
    """Whether a flag's value is taken as written: text fields and text choices (``--mixed-precision no``)."""
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return all(isinstance(a, str) for a in args)
    return any(_is_text(a) for a in args)


def _shown(value) -> str:
    """A default as YAML writes it (a flag's value is YAML): null, [0.05, 0.4], {}."""
    return "null" if value is None else str(list(value) if isinstance(value, tuple) else value)


def parse_args(argv: list[str] | None = None) -> tuple[PretrainConfig, argparse.Namespace]:
    """``--recipe RECIPE``, ``--resume [PATH|latest]``, ``--halt-at-step N`` and one ``--<key> VALUE`` flag per
    configuration field."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k in RunConfig.model_fields}
    base = None
    output_dir = overrides.get("output_dir")
    if args.resume is not None and args.recipe is None and output_dir and is_run(output_dir):
        base = read_run(output_dir).config.to_dict()  # continue the run as it was configured
        _check_stored_paths(base, overrides, Path(output_dir))
    return load_config(args.recipe, overrides, base), args


def _check_stored_paths(stored: dict, overrides: dict, run_dir: Path) -> None:
    """A dataset folder recorded in a run's config.yaml that is gone (moved, or relative to another directory):
    say where the path came from and how to override it."""
    for key, flag in (("data_root", "--data-root"), ("eval_data_root", "--eval-data-root")):
        root = stored.get(key)
        if root and key not in overrides and not Path(root).exists():
            raise ValueError(
                f"{key} {root} recorded in {run_dir / 'config.yaml'} does not exist (moved, or relative to another "
                f"directory); pass {flag} DIR to say where it is now"
            )
