"""The demo runs the encoder once per upload (review follow-up): the logits and the out-of-distribution score come
from one forward (zoo.task.predict), and with saliency on the same forward, run with grad, also gives Grad-CAM
(one backward). Each is checked against the separate calls it replaces (model(x), model.ood_score(x), grad_cam
computed by hand from Eq. (1)-(2))."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import zoo
from medssl_zoo.demo import app
from medssl_zoo.demo.saliency import predict_with_cam
from zoo.ood import OODReference

pytestmark = pytest.mark.timeout(300)


class Counter:
    """Forward calls of a module (the encoder's stem: once per pass through the encoder)."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._count)

    def _count(self, *_):
        self.calls += 1


def _upload(tmp_path, size=64):
    path = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("saliency", [False, True])
def test_one_encoder_forward_per_upload(tiny_export, tmp_path, saliency):
    shown = app.add_operator_model(str(tiny_export))
    model = app.get_model(shown)  # the instance the demo serves from memory
    assert model.ood is not None
    counter = Counter(model.conv1 if hasattr(model, "conv1") else model.stem)
    try:
        app.classify(str(_upload(tmp_path)), shown, "", saliency, 3)
    finally:
        counter.handle.remove()
    assert counter.calls == 1  # was 2 without saliency (model(x), ood_score), 3 with it (+ Grad-CAM)


def test_the_demo_shows_what_the_separate_calls_give(tiny_export, tmp_path):
    """Probabilities and the score in the details equal model(x) / model.ood_score(x) on the same input."""
    shown = app.add_operator_model(str(tiny_export))
    model = app.get_model(shown)
    model.ood.threshold = -1.0  # every upload warned, so that the score is printed
    try:
        for saliency in (False, True):
            label, _, info, _ = app.classify(str(_upload(tmp_path)), shown, "", saliency, 3)
            image, _ = app.read_once(_upload(tmp_path), model.pretrained_cfg["input_size"][0], None)
            x, _ = app.preprocess(image, model)
            with torch.no_grad():
                expected = zoo.task.probabilities(model.task, model(x))[0]
                score = float(model.ood_score(x)[0])
            for name, p in label.items():
                assert p == pytest.approx(float(expected[model.label_names.index(name)]), abs=1e-5)
            assert f"out-of-distribution score {score:.0f} >" in info
    finally:
        app._MODELS.pop(shown, None)  # reloaded with its own threshold by the next test


def _vit_with_reference() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3
    ).eval()
    f = model.num_features
    a = torch.randn(f, f)
    model.ood = OODReference(torch.randn(f), torch.rand(f) + 0.5, torch.zeros(f), a @ a.T / f, 1.0)
    model.task = zoo.task.MULTICLASS
    return model


def _cam_by_hand(model, x, target):
    """Grad-CAM of the ViT's tokens entering the last block, from its own separate forward (Eq. (1)-(2))."""
    captured = {}
    hook = model.blocks[-1].norm1.register_forward_hook(lambda m, i, out: captured.update(a=out))
    with torch.enable_grad():
        logit = model(x)[0, target]
    hook.remove()
    grads = torch.autograd.grad(logit, captured["a"])[0]
    tokens, grads = captured["a"][:, 1:].detach(), grads[:, 1:]  # the class token dropped: a 4 x 4 grid
    grid, grads = (t.transpose(1, 2).reshape(1, -1, 4, 4) for t in (tokens, grads))
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * grid).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    cam = cam - cam.min()
    return (cam / cam.max()).numpy()


def test_a_vit_gets_logits_score_and_cam_from_one_forward():
    model = _vit_with_reference()
    x = torch.randn(1, 3, 32, 32)
    counter = Counter(model.patch_embed)
    logits, score, cam = predict_with_cam(model, x)
    assert counter.calls == 1
    with torch.no_grad():
        expected = model(x)
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(score, model.ood.score(features))
    np.testing.assert_allclose(cam, _cam_by_hand(model, x, int(expected.argmax())), atol=1e-5)
    counter.calls = 0
    plain_logits, plain_score = zoo.task.predict(model, x)
    assert counter.calls == 1
    torch.testing.assert_close(plain_logits, expected)
    torch.testing.assert_close(plain_score, score)
