"""The demo against hostile visitors: typed Hub ids, many model names (loadable, broken, unknown), uploads left
behind, errors that would show server paths; and its operator's start-up. Memory, locks and disk stay bounded,
visitors see the model's name or "the upload", never a path of the server."""

import gc
import json
import os
import shutil
import subprocess
import sys
import weakref
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import zoo
from medssl_zoo.demo import app
from tests.helpers.servers import free_port, serve
from zoo.hub_format import MODEL_CONFIG_FILE
from zoo.registry import is_hub_id

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh $ZOO_HOME and fresh demo state (models, locks, settings, operator models) for one test."""
    folder = tmp_path / "zoo-home"
    folder.mkdir()
    monkeypatch.setenv("ZOO_HOME", str(folder))
    monkeypatch.setattr(app, "_MODELS", OrderedDict())
    monkeypatch.setattr(app, "_LOADING", {})
    monkeypatch.setattr(app, "SETTINGS", {"max_models": 4, "allow_hub_ids": False}, raising=False)
    monkeypatch.setattr(app, "OPERATOR_MODELS", {}, raising=False)
    return folder


@pytest.fixture
def tile(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


def exports(export: Path, home: Path, names: list[str]) -> list[str]:
    for name in names:
        shutil.copytree(export, home / name)
    return names


def broken(export: Path, home: Path, name: str) -> str:
    folder = shutil.copytree(export, home / name)
    config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    config["num_classes"] = -1
    (folder / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    return name


def refused(tile: Path, name: str) -> str:
    with pytest.raises(gr.Error) as error:
        app.classify(str(tile), "", name, False, 3)
    return error.value.message


def test_hub_ids_typed_by_visitors_are_refused_unless_the_operator_allows_them(
    home, tile, tiny_export, monkeypatch
):
    downloads, real_load = [], zoo.load

    def fake_load(name, **kwargs):  # what a download would return, without a Hub
        downloads.append(str(name))
        return real_load(tiny_export)

    monkeypatch.setattr(zoo, "load", fake_load)
    for name in [f"stranger/model-{i}" for i in range(20)]:
        message = refused(tile, name)
        assert message.startswith(
            f"Cannot load model '{name}': this server does not download Hub repositories"
        )
        assert "--allow-hub-ids" in message
    assert downloads == [] and app._LOADING == {} and not app._MODELS
    app.SETTINGS["allow_hub_ids"] = True
    label, *_ = app.classify(str(tile), "", "stranger/model-0", False, 3)
    assert downloads == ["stranger/model-0"] and set(label) <= set(real_load(tiny_export).label_names)


def test_models_held_are_bounded_least_recently_used_first(home, tile, tiny_export):
    names = exports(tiny_export, home, [f"model-{i}" for i in range(6)])
    app.SETTINGS["max_models"] = 2
    alive = {}
    for name in names:
        app.classify(str(tile), name, "", False, 3)
        alive[name] = weakref.ref(app._MODELS[name])
        assert len(app._MODELS) <= 2
    app.classify(str(tile), "model-4", "", False, 3)  # used again: now the most recent
    assert list(app._MODELS) == ["model-5", "model-4"]
    gc.collect()
    assert [name for name, ref in alive.items() if ref() is not None] == ["model-4", "model-5"]  # released


def test_failed_names_leave_no_lock_and_nothing_held(home, tile, tiny_export, monkeypatch):
    names = [broken(tiny_export, home, f"broken-{i}") for i in range(5)]
    names += [f"no-such-model-{i}" for i in range(50)] + ["../../etc/passwd", "/etc/passwd", "x" * 10_000]
    names += [f"stranger/model-{i}" for i in range(20)]  # allowed, but the Hub does not answer
    app.SETTINGS["allow_hub_ids"] = True
    real_load = zoo.load

    def load(name, **kwargs):
        if is_hub_id(str(name)):
            raise zoo.ModelNotAvailableError(f"{name}: the Hub at http://10.0.0.1/internal did not answer")
        return real_load(name, **kwargs)

    monkeypatch.setattr(zoo, "load", load)
    messages = [refused(tile, name) for name in names]
    assert app._LOADING == {} and not app._MODELS
    assert not [m for m in messages if "10.0.0.1" in m or str(home) in m]


def test_errors_shown_to_visitors_never_name_a_server_path(home, tile, tiny_export, tmp_path, caplog):
    message = refused(tile, broken(tiny_export, home, "broken"))
    assert message == (
        "Cannot load model 'broken': its files are damaged or do not fit its configuration; the server's log has "
        "the details."
    )
    assert (
        f"{home / 'broken' / MODEL_CONFIG_FILE}: num_classes must be" in caplog.text
    )  # logged on the server
    uploads = tmp_path / "gradio" / ("ab" * 32)  # where Gradio keeps an upload: <cache>/<sha256>/<name>
    uploads.mkdir(parents=True)
    exports(tiny_export, home, ["good"])
    cases = {
        "notes.png": b"this is not an image",
        "truncated.png": tile.read_bytes()[:100],
        "notes.dcm": b"\0" * 128 + b"DICM" + b"\xff" * 64,
        "empty.tif": b"",
    }
    for name, data in cases.items():
        (uploads / name).write_bytes(data)
        with pytest.raises(gr.Error) as error:
            app.classify(str(uploads / name), "good", "", False, 3)
        shown = error.value.message
        assert shown.startswith("Could not read the upload: ") and str(tmp_path) not in shown, shown
        assert "/tmp" not in shown and "gradio" not in shown, shown
        assert (uploads / name).exists()  # a direct caller's file: never deleted


def test_the_operators_folder_is_shown_by_its_own_name(home, tile, tiny_export):
    shown = app.add_operator_model(str(tiny_export))
    assert shown == tiny_export.name and {shown: str(tiny_export)} == app.OPERATOR_MODELS
    demo = app.build_demo(shown)
    try:
        assert str(tiny_export.parent) not in json.dumps(demo.config, default=str)
    finally:
        demo.close()
    label, *_ = app.classify(str(tile), shown, "", False, 3)
    assert label
    assert refused(tile, str(tiny_export)).startswith(f"Cannot load model '{str(tiny_export)[:80]}")


# --- through the real server


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    """`python demo/app.py --model <folder> --max-models 2` with its own Gradio cache folder and $ZOO_HOME."""
    root = tmp_path_factory.mktemp("hostile-demo")
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(root / "gradio"),
        "ZOO_HOME": str(root / "home"),
    }
    command = [
        sys.executable,
        str(ROOT / "demo" / "app.py"),
        "--model",
        str(tiny_export),
        "--max-models",
        "2",
    ]
    with serve(
        lambda port: [*command, "--port", str(port)], root / "demo.log", timeout=120, env=env, cwd=ROOT
    ) as port:
        yield f"http://127.0.0.1:{port}/", root / "gradio"


@pytest.mark.timeout(300)
def test_uploads_are_deleted_once_read(server, tiny_export, tmp_path):
    from gradio_client import Client, handle_file

    url, cache = server
    client = Client(url, verbose=False)
    rng = np.random.default_rng(1)
    names = []
    for i in range(6):
        path = tmp_path / f"upload-{i}.png"
        Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(path)
        names.append(path.name)
        label, *_ = client.predict(
            handle_file(str(path)), tiny_export.name, "", False, 3, api_name="/classify"
        )
        assert label["label"]
    assert [p for p in cache.rglob("*") if p.is_file() and p.name in names] == []  # 0 bytes left
    bad = tmp_path / "upload-bad.png"
    bad.write_bytes(b"not an image" * 1000)
    with pytest.raises(Exception, match="Could not read the upload") as error:
        client.predict(handle_file(str(bad)), tiny_export.name, "", False, 3, api_name="/classify")
    assert str(cache) not in str(error.value) and "/tmp/" not in str(error.value)
    assert [p for p in cache.rglob("*") if p.is_file() and p.name == bad.name] == []


@pytest.mark.timeout(300)
def test_the_same_file_uploaded_by_many_at_once_is_served_to_all_and_then_gone(server, tiny_export, tmp_path):
    """Gradio stores equal uploads at one path: the first read must not fail the others (the decoded image is kept
    briefly in memory, keyed by that content-addressed path)."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    url, cache = server
    path = tmp_path / "shared.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (200, 260, 3), dtype=np.uint8)).save(path)

    def call(_):
        client = Client(url, verbose=False)
        return client.predict(handle_file(str(path)), tiny_export.name, "", False, 3, api_name="/classify")

    with ThreadPoolExecutor(8) as pool:
        labels = [label["label"] for label, *_ in pool.map(call, range(16))]
    assert len(labels) == 16 and len(set(labels)) == 1
    assert [p for p in cache.rglob("*") if p.is_file() and p.name == path.name] == []


def test_recent_uploads_are_bounded_in_bytes_and_time(monkeypatch):
    from medssl_zoo.demo import uploads

    clock = [0.0]
    monkeypatch.setattr(uploads.time, "monotonic", lambda: clock[0])
    recent = uploads._Recent(max_bytes=3 * 100 * 100 * 3, ttl_s=10)
    image = Image.new("RGB", (100, 100))
    for i in range(5):
        recent.put((f"upload-{i}", 3), (image, "RGB"))
    assert list(recent.items) == [("upload-2", 3), ("upload-3", 3), ("upload-4", 3)]  # the oldest dropped
    recent.put(("huge", 3), (Image.new("RGB", (400, 400)), "RGB"))  # larger than the bound: not kept
    assert recent.get(("huge", 3)) is None and recent.get(("upload-4", 3))[1] == "RGB"
    clock[0] = 11.0
    assert recent.get(("upload-4", 3)) is None and not recent.items  # expired


@pytest.mark.timeout(120)
def test_every_api_input_and_output_has_a_readable_name(server):
    from gradio_client import Client

    info = Client(server[0], verbose=False).view_api(print_info=False, return_format="dict")
    endpoint = info["named_endpoints"]["/classify"]
    outputs = [item["label"] for item in endpoint["returns"]]
    inputs = [item["label"] for item in endpoint["parameters"]]
    assert outputs == ["Prediction", "Where the model looks", "Preprocessing", "Model card"]
    assert not any(name.startswith("value_") for name in inputs + outputs), inputs


@pytest.mark.timeout(120)
def test_the_readmes_command_with_an_unpublished_model_is_one_line_and_exit_code_2(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "ZOO_HOME": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "demo/app.py", "--model", "vicreg-breast", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(
        "ERROR cannot start the demo: --model vicreg-breast cannot be loaded: vicreg-breast is registered but "
        "its weights are not published yet"
    )


@pytest.mark.parametrize("model", ["broken-folder", "no-such-model", "org/not-reachable"])
def test_any_model_that_cannot_be_loaded_at_start_up_is_one_error(
    model, home, tiny_export, caplog, monkeypatch
):
    if model == "broken-folder":
        model = str(home / broken(tiny_export, home, "broken-folder"))
    monkeypatch.setattr(gr.Blocks, "launch", lambda *a, **k: pytest.fail("the server started"))
    monkeypatch.setattr(zoo, "load", _unreachable_for_hub_ids(zoo.load))
    assert app.main(["--model", model]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith(
        f"cannot start the demo: --model {model} cannot be loaded: "
    )


def _unreachable_for_hub_ids(real_load):
    def load(name, **kwargs):
        if is_hub_id(str(name)):
            raise zoo.ModelNotAvailableError(f"{name}: the Hub at http://127.0.0.1:9 did not answer")
        return real_load(name, **kwargs)

    return load


def test_the_demo_options_are_explained(capsys):
    with pytest.raises(SystemExit) as exited:
        app.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exited.value.code == 0
    for phrase in (
        "--port PORT port to serve on (default: 7860)",
        "--max-models MAX_MODELS models kept in memory at once; the least recently used is released first "
        "(default: 4)",
        "--allow-hub-ids let visitors type any Hub repo id (org/name)",
    ):
        assert phrase in text, phrase
