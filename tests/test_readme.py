"""Every command the README shows is one its program accepts, so the README cannot drift from the code (issue 19).

Each line of the README's ``bash`` blocks is parsed as a shell would (``shlex``: quotes, ``#`` comments, ``\\``
continuations, ``VAR=value`` prefixes) and handed to the program it names, through that program's own argument
parser: ``medssl-pretrain`` / ``train/pretrain.py`` further through the whole configuration (recipe, ``extends``,
flag values, method options — what made ``--local-size 96`` fail before), ``medssl-evaluate`` through its options,
``accelerate launch`` through Accelerate's launcher parser as well. The work itself is not started here: the
quickstart and the wheel's commands run in CI (``.ci/run``, ``.ci/wheel_check``), and each program's behaviour has
its own tests. ``test_readme_commands_run_as_written`` runs a chain of them for real.

Placeholders the README uses are replaced by folders of this test (documented in ``PLACEHOLDERS``); ``...`` (more
of the same flags) is dropped. A line the test does not recognise fails it, so a new command must be added here.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# README placeholder → what it stands for here (folders made by the `workspace` fixture)
PLACEHOLDERS = {
    "~/data/archive": "{home}/data/archive",
    "~/data/kather": "{home}/data/kather",
    "~/data": "{home}/data",
    "/archive": "{home}/archive",
    "DATA": "{home}/data",
    "DIR": "{home}/images",
    "RUN": "{run}",
    "runs/simclr-synthetic-…": "{run}",
    "runs/simclr-synthetic-...": "{run}",
    "runs/X": "{run}",
    "MODEL": "simclr-synthetic",
    "OUT": "{home}/out",
}
SKIPPED = (
    "python3 -m venv",  # the quickstart's first command: .ci/run runs it as written
    ".venv/bin/python -m pytest",  # the quickstart's second command: .ci/run runs it as written
    "pip install",  # the wheel's installs: .ci/wheel_check runs them
)
SCRIPTS = {
    "train/pretrain.py": "pretrain",
    "medssl_zoo.train.pretrain": "pretrain",
    "medssl-pretrain": "pretrain",
    "train/evaluate.py": "evaluate",
    "medssl-evaluate": "evaluate",
    "train/reproduce.py": "reproduce",
    "medssl-reproduce": "reproduce",
    "hub.export": "export",
    "medssl-export": "export",
    "hub.push": "push",
    "medssl-push": "push",
    "zoo": "zoo",
    "medssl-zoo": "zoo",
    "medssl_zoo.embed": "embed",
    "medssl-embed": "embed",
    "demo/app.py": "demo",
    "medssl-demo": "demo",
}

MAINS = {
    "pretrain": "medssl_zoo.train.pretrain",
    "evaluate": "medssl_zoo.train.evaluate",
    "reproduce": "medssl_zoo.train.reproduce",
    "export": "medssl_zoo.hub.export",
    "push": "medssl_zoo.hub.push",
    "zoo": "zoo.__main__",
    "embed": "medssl_zoo.embed",
    "demo": "medssl_zoo.demo.app",
}


def readme_commands() -> list[str]:
    """The command lines of the README's ``bash`` blocks, continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def split_command(line: str) -> tuple[list[str], str, list[str]]:
    """``(launcher arguments, program, program arguments)`` of one README line."""
    words = [w for w in shlex.split(line, comments=True) if w != "..."]
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words.pop(0)
    launcher: list[str] = []
    if words[:2] == ["accelerate", "launch"]:
        words = words[2:]
        at = next(i for i, w in enumerate(words) if w in SCRIPTS or (w == "-m" and words[i + 1] in SCRIPTS))
        launcher, words = words[:at], words[at:]
    if words[0] in ("python", "python3"):
        words = words[1:]
    if words[0] == "-m":
        words = words[1:]
    if words[0] not in SCRIPTS:
        raise AssertionError(f"the README shows a command this test does not know: {line!r}")
    return launcher, SCRIPTS[words[0]], words[1:]


class Parsed(Exception):
    """Raised by the patched ``parse_args``: the program accepted its arguments; its work is not started."""


def accepted_by(program: str, argv: list[str], monkeypatch) -> None:
    """``argv`` through ``program``'s own parser (and, for pre-training and evaluation, its configuration)."""
    if program == "pretrain":
        from medssl_zoo.train.config import parse_args

        parse_args(argv)
        return
    if program == "evaluate":
        from medssl_zoo.train.evaluate import parse_args

        parse_args(argv)
        return
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    module = __import__(MAINS[program], fromlist=["main"])
    with pytest.raises(Parsed):
        module.main(argv)


@pytest.fixture
def workspace(tmp_path, monkeypatch, tiny_run):
    home = tmp_path / "home"
    for folder in ("data/archive", "data/kather", "archive", "images", "out"):
        (home / folder).mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return {"home": str(home), "run": str(tiny_run)}


def substituted(words: list[str], workspace: dict) -> list[str]:
    out = []
    for word in words:
        for placeholder, value in PLACEHOLDERS.items():
            if word == placeholder or word.startswith(placeholder + "/"):
                word = value.format(**workspace) + word[len(placeholder) :]
                break
        out.append(word)
    return out


def help_commands(capsys) -> list[str]:
    """The example command lines each program prints in its ``--help``."""
    lines = []
    for program in sorted(set(SCRIPTS.values())):
        with pytest.raises(SystemExit) as shown:
            __import__(MAINS[program], fromlist=["main"]).main(["--help"])
        assert shown.value.code == 0
        text = capsys.readouterr().out
        lines += [
            line.strip() for line in text.splitlines() if re.match(r"\s*(medssl-|accelerate launch )", line)
        ]
    return lines


def test_the_readme_shows_commands_of_every_program():
    programs = {split_command(line)[1] for line in readme_commands() if not line.startswith(SKIPPED)}
    assert programs == set(SCRIPTS.values()), programs ^ set(SCRIPTS.values())


@pytest.mark.parametrize("line", [line for line in readme_commands() if not line.startswith(SKIPPED)])
def test_every_readme_command_is_accepted_by_its_program(line, workspace, monkeypatch):
    launcher, program, argv = split_command(line)
    if launcher:
        from accelerate.commands.launch import launch_command_parser

        launch_command_parser().parse_args([*launcher, "script.py"])
    if "--help" in argv:
        with pytest.raises(SystemExit) as shown:
            accepted_by(program, argv, monkeypatch)
        assert shown.value.code == 0
        return
    accepted_by(program, substituted(argv, workspace), monkeypatch)


def test_every_command_a_help_text_shows_is_accepted_by_its_program(workspace, monkeypatch, capsys):
    lines = help_commands(capsys)
    assert len(lines) >= 9, lines  # evaluate's and reproduce's examples at least
    for line in lines:
        _, program, argv = split_command(line)
        accepted_by(program, substituted(argv, workspace), monkeypatch)
        monkeypatch.undo()  # the next program's parser unpatched
        monkeypatch.setenv("HOME", workspace["home"])


# README lines run for real, in this order, each with the tiny-size flags after it (later flags win)
TINY = ["--max-steps", "2", "--eval-every", "2", "--checkpoint-every", "2", "--progress", "false"]
RUN_AS_WRITTEN = [
    ("--method dino --local-crops 6 --local-size 28", [*TINY, "--output-dir", "runs/my-run"]),
    ("medssl-export runs/my-run zoo_home/simclr-breast", []),
    ("medssl-zoo list", []),
    ("medssl-zoo info simclr-synthetic", []),
    (
        "medssl-evaluate zoo_home/simclr-synthetic --dataset imagefolder --data-root DIR",
        ["--protocols", "knn", "--fractions", "1", "--seeds", "0", "--baselines", "none", "--no-plots"],
    ),
]


@pytest.mark.timeout(600)
def test_readme_commands_run_as_written(workspace, tiny_export, tmp_path, monkeypatch, capsys):
    import shutil

    from tests.helpers.accelerate_state import reset_accelerate_state
    from tests.zoo.data.trees import imagefolder

    shutil.copytree(tiny_export, tmp_path / "zoo_home" / "simclr-synthetic")  # the quickstart's export
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "zoo_home"))
    imagefolder(Path(workspace["home"]) / "images", per_class=8)
    lines = readme_commands()
    for shown, tiny in RUN_AS_WRITTEN:
        line = next((line for line in lines if shown in line), None)
        assert line is not None, f"the README no longer shows {shown!r}: update RUN_AS_WRITTEN"
        _, program, argv = split_command(line)
        reset_accelerate_state()
        code = __import__(MAINS[program], fromlist=["main"]).main([*substituted(argv, workspace), *tiny])
        assert code == 0, f"{line!r} exited {code}:\n{capsys.readouterr().err[-3000:]}"
    assert (tmp_path / "zoo_home" / "simclr-breast" / "model.safetensors").is_file()
    assert "simclr-synthetic" in capsys.readouterr().out
