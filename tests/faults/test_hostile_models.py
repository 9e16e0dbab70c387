"""Hostile model folders through zoo.load: each refused with one clear error before anything large is allocated
(peak RSS growth of the refusal measured in a fresh process), no pickle ever read."""

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import zoo
from zoo.hub_format import MODEL_CONFIG_FILE, WEIGHTS_FILE

ROOT = Path(__file__).resolve().parents[2]


class Marker:
    """Unpickling this writes a file: proof that a pickle was (or was not) loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path(self.path).write_text, ("a pickle was loaded",))


def with_config(folder: Path, change) -> Path:
    config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    change(config)
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    return folder


def hostile(name: str, export: Path, folder: Path) -> tuple[Path, str]:
    """(a broken copy of the export, the message its refusal must contain)."""
    folder = shutil.copytree(export, folder / name)
    if name == "five-million-classes":
        return with_config(
            folder, lambda c: c.update(num_classes=5_000_000)
        ), "num_classes must be an integer in"
    if name == "2**40-classes":
        return with_config(folder, lambda c: c.update(num_classes=2**40)), "num_classes must be an integer in"
    if name == "checkpoint-path":
        evil = folder / "evil.pth"
        evil.write_bytes(pickle.dumps(Marker(str(folder / "PWNED"))))
        return with_config(folder, lambda c: c["model_args"].update(checkpoint_path=str(evil))), "are refused"
    if name == "pretrained-download":
        return with_config(folder, lambda c: c["model_args"].update(pretrained=True)), "are refused"
    if name == "giant-model-args":
        return with_config(
            folder, lambda c: c["model_args"].update(embed_dim=100_000, depth=500)
        ), "unknown model_args"
    if name == "architecture-not-a-string":
        return with_config(
            folder, lambda c: c.update(architecture=["resnet50"])
        ), "architecture must be a timm"
    if name == "pretrained-cfg-null":
        return with_config(
            folder, lambda c: c.update(pretrained_cfg=None)
        ), "pretrained_cfg must be a mapping"
    if name == "huge-input-size":
        return with_config(
            folder, lambda c: c["pretrained_cfg"].update(input_size=[3, 100_000, 100_000])
        ), "input_size"
    if name == "not-utf8":
        (folder / MODEL_CONFIG_FILE).write_bytes(b'{"architecture": "\xff\xfe"}')
        return folder, "not valid UTF-8 JSON"
    if (
        name == "classes-beyond-the-weights"
    ):  # a consistent config asking for a 1000-class head the file lacks
        return with_config(folder, lambda c: c.update(num_classes=1000, label_names=[])), "wrong shape"
    if name == "bigger-architecture":  # a valid but much larger model than the weights hold
        return with_config(folder, lambda c: c.update(architecture="resnet152")), "do not fit"
    if name == "header-claims-more-than-the-file":
        data = (folder / WEIGHTS_FILE).read_bytes()
        (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 3])
        return folder, "corrupt or truncated"
    if name == "header-length-bomb":
        (folder / WEIGHTS_FILE).write_bytes((2**60).to_bytes(8, "little") + b"{}")
        return folder, "corrupt or truncated"
    raise KeyError(name)


CASES = [
    "five-million-classes",
    "2**40-classes",
    "checkpoint-path",
    "pretrained-download",
    "giant-model-args",
    "architecture-not-a-string",
    "pretrained-cfg-null",
    "huge-input-size",
    "not-utf8",
    "classes-beyond-the-weights",
    "bigger-architecture",
    "header-claims-more-than-the-file",
    "header-length-bomb",
]


@pytest.mark.parametrize("case", CASES)
def test_hostile_folder_is_refused_with_a_clear_error(tiny_export, tmp_path, case):
    folder, message = hostile(case, tiny_export, tmp_path)
    with pytest.raises(ValueError, match=message):
        zoo.load(folder)
    assert not (folder / "PWNED").exists()


def test_refusals_allocate_nothing_large(tiny_export, tmp_path):
    """All refusals in one fresh process: its peak RSS grows by less than 300 MB over the imports."""
    folders = [str(hostile(case, tiny_export, tmp_path)[0]) for case in CASES]
    script = f"""
import json, resource, sys
sys.path.insert(0, {str(ROOT)!r})
import zoo
zoo.load({str(tiny_export)!r})  # warm up: the imports and one real (small) load
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = 0
for folder in {folders!r}:
    try:
        zoo.load(folder)
    except ValueError:
        refused += 1
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({{"refused": refused, "grown_mb": grown / 1024, "peak_mb": before / 1024}}))
"""
    out = json.loads(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    )
    assert out["refused"] == len(CASES), out
    assert out["grown_mb"] < 300, out


def test_a_valid_export_still_loads_after_the_checks(tiny_export):
    model = zoo.load(tiny_export)
    state = load_file(tiny_export / WEIGHTS_FILE)
    assert all((model.state_dict()[k] == v).all() for k, v in state.items())


def test_weights_are_never_read_from_a_pickle(tiny_export, tmp_path):
    folder = shutil.copytree(tiny_export, tmp_path / "pickled")
    state = load_file(folder / WEIGHTS_FILE)
    (folder / WEIGHTS_FILE).unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Marker(str(folder / "PWNED"))))
    with pytest.raises(ValueError, match="pickle files are never loaded"):
        zoo.load(folder)
    assert not (folder / "PWNED").exists()
    save_file(state, str(folder / WEIGHTS_FILE))
    assert zoo.load(folder).num_classes == 4
