"""zoo.load on local folders: strict, safetensors only, clear errors for every broken repository."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from zoo.hub_format import MODEL_CONFIG_FILE, WEIGHTS_FILE, zoo_home


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    return shutil.copytree(tiny_export, tmp_path / "model")


def test_load_is_eval_strict_and_carries_metadata(export_copy):
    model = zoo.load(export_copy)
    assert not model.training and model.label_names == ["small_round", "large", "spindle", "gland"]
    assert model.pretrained_cfg["mean"] == [0.5, 0.5, 0.5] and model.zoo_metadata["method"] == "simclr"
    features = zoo.load(export_copy, features_only=True)
    x = torch.randn(2, 3, 32, 32)
    assert features(x).shape == (2, model.num_features) and model(x).shape == (2, 4)


def test_zoo_home_name_resolution(export_copy):
    shutil.copytree(export_copy, zoo_home() / "my-local-model")
    assert "my-local-model" in zoo.list_models()
    assert zoo.load("my-local-model").label_names == zoo.load(export_copy).label_names
    assert zoo.model_info("my-local-model")["architecture"] == "test_resnet"


def test_unknown_name_lists_close_names():
    with pytest.raises(zoo.ModelNotAvailableError, match="Close names: vicreg-breast"):
        zoo.load("vicreg-brest")


def test_missing_config(export_copy):
    (export_copy / MODEL_CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match="no config.json"):
        zoo.load(export_copy)


def test_unknown_architecture(export_copy):
    config = json.loads((export_copy / MODEL_CONFIG_FILE).read_text())
    config["architecture"] = "resnet_5000"
    (export_copy / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Unknown timm architecture 'resnet_5000'"):
        zoo.load(export_copy)


def test_pickle_only_repository_is_refused(export_copy):
    state = load_file(export_copy / WEIGHTS_FILE)
    (export_copy / WEIGHTS_FILE).unlink()
    torch.save(state, export_copy / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"only has \['pytorch_model.bin'\].*never loaded"):
        zoo.load(export_copy)


@pytest.mark.parametrize("change", ["missing", "unexpected", "misshaped"])
def test_mismatched_tensors_are_refused_by_name(export_copy, change):
    state = load_file(export_copy / WEIGHTS_FILE)
    if change == "missing":
        del state["fc.bias"]
    elif change == "unexpected":
        state["projector.0.weight"] = torch.zeros(2, 2)
    else:
        state["fc.weight"] = torch.zeros(3, state["fc.weight"].shape[1])
    save_file(state, str(export_copy / WEIGHTS_FILE))
    expected = {
        "missing": r"missing: \['fc.bias'\]",
        "unexpected": r"unexpected: \['projector.0.weight'\]",
        "misshaped": r"wrong shape: \['fc.weight'\]",
    }[change]
    with pytest.raises(ValueError, match=expected):
        zoo.load(export_copy)


def test_truncated_weights(export_copy):
    data = (export_copy / WEIGHTS_FILE).read_bytes()
    (export_copy / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        zoo.load(export_copy)


def test_config_with_keys_timm_would_refuse(export_copy):
    config = json.loads((export_copy / MODEL_CONFIG_FILE).read_text())
    config["pretrained_cfg"]["favourite_colour"] = "blue"
    (export_copy / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unknown pretrained_cfg keys"):
        zoo.load(export_copy)


def test_cli_list_info_load(export_copy, capsys):
    from zoo.__main__ import main

    assert main(["list", "simclr-*"]) == 0
    assert "simclr-breast" in capsys.readouterr().out
    assert main(["load", str(export_copy)]) == 0
    assert "test_resnet" in capsys.readouterr().out
    assert main(["load", "nope-nothing"]) == 2
    assert "unknown model" in capsys.readouterr().err
    shutil.copytree(export_copy, zoo_home() / "cli-info-model")
    assert main(["info", "cli-info-model"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "test_resnet" and info["label_names"] == zoo.load(export_copy).label_names
    assert info["zoo"]["method"] == "simclr" and info["pretrained_cfg"]["input_size"] == [3, 32, 32]


def test_register_and_device(export_copy, monkeypatch):
    monkeypatch.setattr(
        zoo.registry.MODELS, "_items", dict(zoo.registry.MODELS._items)
    )  # restored afterwards

    entry = zoo.register("my-registered", "org/my-registered", revision="a" * 40)
    assert zoo.registry.get_entry("my-registered") == entry and "my-registered" in zoo.list_models("my-*")
    with pytest.raises(ValueError, match="already registered"):
        zoo.register("my-registered", "org/other")
    zoo.register("my-registered", "org/other", overwrite=True)
    assert zoo.registry.get_entry("my-registered").repo_id == "org/other"
    model = zoo.load(export_copy, device="meta")  # the device argument is honoured (meta: no memory)
    assert {p.device.type for p in model.parameters()} == {"meta"}


def test_unknown_name_says_how_to_list_the_names():
    with pytest.raises(zoo.ModelNotAvailableError, match=r" `medssl-zoo list` shows the available names\.$"):
        zoo.load("vicreg-brest")
    with pytest.raises(zoo.ModelNotAvailableError) as refused:  # not a valid name: nothing to compare it with
        zoo.load("vicreg-breast!")
    assert "Close names" not in str(refused.value)


def test_model_info_combines_the_registry_entry_and_the_config(export_copy, monkeypatch):
    from zoo.registry import MODELS

    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))  # the registry is restored afterwards
    shutil.copytree(export_copy, zoo_home() / "info-model")
    zoo.register("info-model", "medssl-zoo/info-model", revision="v1")
    info = zoo.model_info("info-model")
    assert info["name"] == "info-model" and info["registry"]["repo_id"] == "medssl-zoo/info-model"
    assert info["num_classes"] == 4 and info["zoo"]["method"] == "simclr"
    config = json.loads((export_copy / MODEL_CONFIG_FILE).read_text())
    del config["zoo"]  # a plain timm folder: no zoo block
    (export_copy / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    plain = zoo.model_info(export_copy)
    assert plain["registry"] is None and plain["zoo"] == {} and plain["name"] == str(export_copy)
