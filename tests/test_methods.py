"""Every method builds on small timm backbones (ResNet and ConvNeXt), 1 and 3 channels, and trains a step."""

import pytest
import torch

from zoo import create_backbone, create_method, list_methods
from zoo.heads import SimSiamPredictionHead
from zoo.losses import DCLWLoss, VICRegLoss

BACKBONES = ["resnet18", "convnext_atto"]


def test_registry_lists_the_study_methods_plus_barlow():
    assert list_methods() == ["barlowtwins", "dclw", "simclr", "simsiam", "vicreg"]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("method", ["simclr", "dclw", "simsiam", "vicreg", "barlowtwins"])
def test_method_takes_a_training_step(method, backbone, in_chans):
    torch.manual_seed(0)
    model = create_method(method, backbone=backbone, in_chans=in_chans)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x1, x2 = torch.rand(2, 4, in_chans, 32, 32).unbind(0)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    out = model(x1, x2)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    opt.step()
    changed = sum(
        not torch.equal(a, b.detach()) for a, b in zip(before, model.backbone.parameters(), strict=True)
    )
    assert changed > 0, "the backbone did not learn"
    assert model.features(x1).shape == (4, model.backbone.num_features)


def test_head_widths_scale_with_backbone_features():
    r50 = create_method("simclr", "resnet50")
    assert [m.out_features for m in r50.projector if isinstance(m, torch.nn.Linear)] == [512, 128]
    r18 = create_method("vicreg", "resnet18")  # 512 features → 1024 → 1024 (study: 2048 → 4096 → 4096)
    assert r18.projector.dims == [512, 1024, 1024]


def test_simsiam_has_its_predictor_except_in_paper_mode():
    assert isinstance(create_method("simsiam", "resnet18").predictor, SimSiamPredictionHead)
    assert create_method("simsiam", "resnet18", paper_mode=True).predictor is None


def test_paper_mode_reaches_the_losses():
    assert create_method("dclw", "resnet18", paper_mode=True).criterion.paper_mode
    assert not create_method("dclw", "resnet18").criterion.paper_mode
    assert isinstance(create_method("vicreg", "resnet18", paper_mode=True).criterion, VICRegLoss)
    assert isinstance(create_method("dclw", "resnet18").criterion, DCLWLoss)


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(ValueError, match="valid methods: barlowtwins, dclw, simclr, simsiam, vicreg"):
        create_method("byol")
    with pytest.raises(ValueError, match="Close matches: .*resnet50"):
        create_backbone("resnet_50")
    with pytest.raises(ValueError, match="in_chans"):
        create_backbone("resnet18", in_chans=4)


def test_backbone_feature_dim_comes_from_the_model():
    assert create_backbone("resnet18").num_features == 512
    assert create_backbone("convnext_atto", in_chans=1)(torch.rand(2, 1, 32, 32)).shape == (2, 320)
