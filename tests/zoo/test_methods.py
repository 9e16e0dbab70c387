"""Every method builds on small timm backbones (ResNet and ConvNeXt), 1 and 3 channels, and trains a step."""

import pytest
import torch

from zoo import create_backbone, create_method, list_methods
from zoo.heads import SimSiamPredictionHead
from zoo.losses import BarlowTwinsLoss, DCLWLoss, SimCLRLoss, SimSiamLoss, VICRegLoss

BACKBONES = ["resnet18", "convnext_atto"]


def test_registry_lists_the_study_methods_plus_barlow():
    assert list_methods() == ["barlowtwins", "byol", "dclw", "dino", "mocov3", "simclr", "simsiam", "vicreg"]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("method", list_methods())
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


@pytest.mark.parametrize("method", list_methods())
def test_every_method_on_a_vit_at_a_small_input_size(method):
    """ViTs are built for the run's input size (here 32 px on timm's 224-px test_vit) by every method."""
    torch.manual_seed(0)
    model = create_method(method, backbone="test_vit", image_size=32)
    views = [torch.rand(4, 3, 32, 32) for _ in range(2)]
    views += [torch.rand(4, 3, 16, 16) for _ in range(2)] if model.multi_crop else []
    out = model(*views)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.backbone.patch_embed.img_size == (32, 32)
    assert model.evaluated_encoder(views[0]).shape == (4, model.num_features)


def test_head_widths_scale_with_backbone_features():

    r50 = create_method("simclr", "resnet50")
    assert [m.out_features for m in r50.projector if isinstance(m, torch.nn.Linear)] == [512, 128]
    r18 = create_method("vicreg", "resnet18")  # 512 features → 1024 → 1024 (study: 2048 → 4096 → 4096)
    assert r18.projector.dims == [512, 1024, 1024]


def test_simsiam_has_its_predictor_except_in_paper_mode():
    assert isinstance(create_method("simsiam", "resnet18").predictor, SimSiamPredictionHead)
    assert create_method("simsiam", "resnet18", paper_mode=True).predictor is None


# each method's loss hyper-parameters, standard and in paper mode: the literals of the papers and the study
LOSS_SETTINGS = {
    ("simclr", False): (SimCLRLoss, {"temperature": 0.5}),
    ("simclr", True): (SimCLRLoss, {"temperature": 0.5}),
    ("dclw", False): (DCLWLoss, {"temperature": 0.1, "sigma": 0.5, "paper_mode": False}),
    ("dclw", True): (DCLWLoss, {"temperature": 0.1, "sigma": 0.5, "paper_mode": True}),
    ("vicreg", False): (
        VICRegLoss,
        {
            "invariance_weight": 25.0,
            "variance_weight": 25.0,
            "covariance_weight": 1.0,
            "eps": 1e-4,
            "paper_mode": False,
        },
    ),
    ("vicreg", True): (VICRegLoss, {"invariance_weight": 25.0, "variance_weight": 25.0, "paper_mode": True}),
    ("barlowtwins", False): (BarlowTwinsLoss, {"lambda_offdiag": 0.0051}),
    ("simsiam", False): (SimSiamLoss, {}),
}


@pytest.mark.parametrize(("method", "paper_mode"), list(LOSS_SETTINGS))
def test_each_method_builds_its_loss_with_the_papers_settings(method, paper_mode):
    loss_class, settings = LOSS_SETTINGS[(method, paper_mode)]
    criterion = create_method(method, "test_resnet", paper_mode=paper_mode).criterion
    assert type(criterion) is loss_class
    assert {k: getattr(criterion, k) for k in settings} == settings


def test_loss_defaults_are_the_papers():
    assert SimCLRLoss().temperature == 0.5
    assert (DCLWLoss().temperature, DCLWLoss().sigma, DCLWLoss().paper_mode) == (0.1, 0.5, False)
    vicreg = VICRegLoss()
    assert (vicreg.invariance_weight, vicreg.variance_weight, vicreg.covariance_weight, vicreg.eps) == (
        25.0,
        25.0,
        1.0,
        1e-4,
    )
    assert BarlowTwinsLoss().lambda_offdiag == 0.0051 and not vicreg.paper_mode


def test_unknown_names_list_the_valid_choices():
    with pytest.raises(
        ValueError, match="Unknown SSL method .swav.; valid: barlowtwins, byol, dclw, dino, mocov3, simclr"
    ):
        create_method("swav")
    with pytest.raises(ValueError, match="Close matches: .*resnet50"):
        create_backbone("resnet_50")
    with pytest.raises(ValueError, match="in_chans"):
        create_backbone("resnet18", in_chans=4)


def test_backbone_feature_dim_comes_from_the_model():
    assert create_backbone("resnet18").num_features == 512
    assert create_backbone("convnext_atto", in_chans=1)(torch.rand(2, 1, 32, 32)).shape == (2, 320)


def test_byol_and_mocov3_share_one_forward():
    """Issue 20.5: the two teacher-student models compute the same thing under two papers' names."""
    from zoo.methods import BYOLModel, MoCoV3Model, TeacherStudentModel

    assert BYOLModel.forward is MoCoV3Model.forward is TeacherStudentModel.forward
    torch.manual_seed(0)
    model = create_method("mocov3", backbone="resnet18")
    x1, x2 = torch.rand(2, 4, 3, 32, 32).unbind(0)
    out = model(x1, x2)
    q1, q2 = model.predictor(out["z1"]), model.predictor(out["z2"])
    k1, k2 = model.teacher(x1), model.teacher(x2)
    torch.testing.assert_close(out["loss"], model.criterion(q1, q2, k1, k2))
    with pytest.raises(ValueError, match="takes two views, got 3"):
        model(x1, x2, x1)


def test_the_ema_is_a_lerp_towards_the_student():
    """θ_t ← τ·θ_t + (1 − τ)·θ_s for every parameter of backbone and projector; buffers (BatchNorm statistics) are
    the teacher's own."""
    torch.manual_seed(0)
    model = create_method("byol", backbone="resnet18", model_options={"momentum": 0.9})
    with torch.no_grad():
        for p in [*model.backbone.parameters(), *model.projector.parameters()]:
            p.add_(torch.randn_like(p))
    teacher = [
        p.clone() for p in [*model.teacher_backbone.parameters(), *model.teacher_projector.parameters()]
    ]
    student = [*model.backbone.parameters(), *model.projector.parameters()]
    buffers = [b.clone() for b in model.teacher_backbone.buffers()]
    model.after_optimizer_step(0.0)  # τ = base momentum at the start
    updated = [*model.teacher_backbone.parameters(), *model.teacher_projector.parameters()]
    for t, s, new in zip(teacher, student, updated, strict=True):
        torch.testing.assert_close(new, 0.9 * t + 0.1 * s)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.teacher_backbone.buffers(), strict=True))
