import os
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.servers import serve

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def gray_export(tiny_export):
    """A 1-channel model (X-ray style) in the hub format, from the same export code, exported into $ZOO_HOME (the
    demo's visitors may load models by name from there, never by a path)."""
    from medssl_zoo.hub.export import build_classifier, write_folder
    from zoo import create_backbone
    from zoo.hub_format import make_config, zoo_home
    from zoo.probe import LinearProbe

    torch.manual_seed(0)
    encoder = create_backbone("test_resnet", in_chans=1)
    f = encoder.num_features
    probe = LinearProbe(torch.randn(2, f), torch.zeros(2), torch.zeros(f), torch.ones(f), 1.0, 0.5)
    model = build_classifier(encoder, "test_resnet", 1, probe)
    data_config = {"input_size": (1, 64, 64), "mean": (0.5,), "std": (0.5,), "crop_pct": 1.0}
    config = make_config(
        "test_resnet",
        model.pretrained_cfg,
        num_classes=2,
        num_features=f,
        in_chans=1,
        label_names=["NORMAL", "PNEUMONIA"],
        data_config=data_config,
        license="CC BY 4.0",
        zoo_metadata={"method": "simclr", "dataset": "pneumonia"},
    )
    return write_folder(zoo_home() / "gray-model", model, config, "---\nlibrary_name: timm\n---\n")


@pytest.fixture(scope="session")
def gradio_files(tmp_path_factory):
    """The demo server's Gradio cache folder (GRADIO_TEMP_DIR): uploads and outputs land here."""
    return tmp_path_factory.mktemp("gradio-files")


@pytest.fixture(scope="session")
def demo_url(tiny_export, gradio_files, tmp_path_factory):
    """`python demo/app.py` on 127.0.0.1, started as a user would, stopped by PID; the operator's model is a
    folder, shown to visitors by its own name."""
    env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(gradio_files),
    }

    def command(port: int) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "demo" / "app.py"),
            "--model",
            str(tiny_export),
            "--port",
            str(port),
        ]

    with serve(command, tmp_path_factory.mktemp("demo") / "demo.log", timeout=120, env=env, cwd=ROOT) as port:
        yield f"http://127.0.0.1:{port}/"
