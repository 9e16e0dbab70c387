"""What a loss-level test cannot see: each method's heads at its paper's widths, what ``forward`` hands to the loss
and returns, the teacher-student schedules, and the method registry. Expectations are literals of the papers or
direct recomputations with the model's own modules."""

import dataclasses

import pytest
import torch
from torch import nn

from zoo import create_method
from zoo.methods import METHODS, DINOModel, get_method_spec, register_method
from zoo.methods.model import cosine_momentum

R50, VIT_S = 2048, 384  # feature widths of ResNet-50 and ViT-S/16


def widths(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def views(count: int = 2, n: int = 4, size: int = 32) -> list[torch.Tensor]:
    return [torch.rand(n, 3, size, size) for _ in range(count)]


def test_byol_heads_are_the_papers():
    spec = get_method_spec("byol")
    assert widths(spec.make_projector(R50)) == [(2048, 4096), (4096, 256)]  # BYOL Sec. 3.3
    assert widths(spec.make_predictor(256, False)) == [(256, 4096), (4096, 256)]
    assert widths(spec.make_predictor(8, False)) == [(8, 256), (256, 8)]  # never fewer than 256 hidden units


def test_mocov3_heads_are_the_official_ones():
    spec = get_method_spec("mocov3")
    assert widths(spec.make_projector(R50)) == [(2048, 4096), (4096, 256)]  # ResNet-50: a 2-layer projector
    # ViTs: 3 layers (moco/builder.py MoCo_ViT), 4096 hidden units quoted for 2048 features, scaled to 384
    assert widths(spec.make_projector(VIT_S)) == [(384, 768), (768, 768), (768, 256)]
    assert widths(spec.make_projector(32)) == [(32, 256), (256, 256), (256, 256)]  # never below 256
    assert widths(spec.make_predictor(256, False)) == [(256, 4096), (4096, 256)]


def test_simsiam_predictor_has_a_quarter_width_bottleneck():
    spec = get_method_spec("simsiam")
    assert widths(spec.make_predictor(R50, False)) == [(2048, 512), (512, 2048)]  # SimSiam Sec. 3: 2048 → 512
    assert widths(spec.make_predictor(16, False)) == [(16, 8), (8, 16)]  # never below 8
    assert spec.make_predictor(R50, True) is None  # the study's code has none


@pytest.mark.parametrize("method", ["simsiam", "byol", "mocov3"])
def test_predictor_methods_return_and_score_what_they_compute(method):
    torch.manual_seed(0)
    model = create_method(method, "test_resnet")
    x1, x2 = views()
    out = model(x1, x2)
    assert set(out) == {"z1", "z2", "p1", "p2", "loss"}
    z1, z2 = (model.projector(model.backbone(x)) for x in (x1, x2))
    p1, p2 = model.predictor(z1), model.predictor(z2)
    targets = (z1, z2) if method == "simsiam" else (model.teacher(x1), model.teacher(x2))
    for name, expected in {"z1": z1, "z2": z2, "p1": p1, "p2": p2}.items():
        torch.testing.assert_close(out[name], expected, msg=name)
    torch.testing.assert_close(out["loss"], model.criterion(p1, p2, *targets))


def test_simsiam_in_paper_mode_compares_the_projections_directly():
    torch.manual_seed(0)
    model = create_method("simsiam", "test_resnet", paper_mode=True)
    out = model(*views())
    torch.testing.assert_close(out["p1"], out["z1"])
    torch.testing.assert_close(out["p2"], out["z2"])
    torch.testing.assert_close(out["loss"], model.criterion(out["z1"], out["z2"], out["z1"], out["z2"]))


def test_two_view_methods_say_who_they_are_when_given_other_counts():
    model = create_method("simclr", "test_resnet")
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"^simclr takes two views, got 3$"):
        model(x, x, x)
    model.method = ""
    with pytest.raises(ValueError, match=r"^this method takes two views, got 1$"):
        model(x)
    with pytest.raises(
        ValueError, match=r"^DINO takes two global crops and optional local crops, got 1 views$"
    ):
        create_method("dino", "test_resnet")(x)


def test_dino_student_sees_every_crop_and_the_teacher_the_global_ones(monkeypatch):
    torch.manual_seed(0)
    model = create_method("dino", "test_resnet").eval()  # eval: each crop's output depends on that crop only
    crops = views(2) + views(2, size=16)  # 2 global crops, 2 local crops
    seen = {}

    def criterion(student, teacher):
        seen.update(student=student, teacher=teacher)
        return torch.zeros(())

    monkeypatch.setattr(model.criterion, "forward", criterion)
    out = model(*crops)
    assert len(seen["student"]) == 4 and len(seen["teacher"]) == 2
    for crop, student in zip(crops, seen["student"], strict=True):
        torch.testing.assert_close(student, model.projector(model.backbone(crop)), rtol=1e-4, atol=1e-5)
    for crop, teacher in zip(crops, seen["teacher"], strict=False):
        torch.testing.assert_close(teacher, model.teacher(crop), rtol=1e-4, atol=1e-5)
    assert out["z1"] is seen["student"][0] and out["z2"] is seen["student"][1]


def test_reset_teacher_copies_the_student():
    """After the student got weights from elsewhere (--init), the teacher starts from the same weights."""
    model = create_method("byol", "test_resnet")
    with torch.no_grad():
        for p in [*model.backbone.parameters(), *model.projector.parameters()]:
            p.add_(1.0)
    differs = lambda: any(  # noqa: E731
        not torch.equal(t, s)
        for t, s in zip(
            model.teacher_backbone.state_dict().values(), model.backbone.state_dict().values(), strict=True
        )
    )
    assert differs()
    model.reset_teacher()
    for teacher, own in (
        (model.teacher_backbone, model.backbone),
        (model.teacher_projector, model.projector),
    ):
        for (name, t), s in zip(teacher.state_dict().items(), own.state_dict().values(), strict=True):
            torch.testing.assert_close(t, s, rtol=0, atol=0, msg=name)
    assert not differs()


def test_dino_defaults_are_the_papers():
    model = create_method("dino", "test_resnet")
    assert model.momentum_base == 0.996 and model.evaluate_teacher  # DINO Sec. 3.1; the teacher is evaluated
    built = DINOModel(model.backbone, model.projector, model.criterion)
    assert built.freeze_last_layer == 0.0 and built.evaluate_teacher


def test_dino_freezes_the_last_layer_before_the_given_progress_only():
    model = create_method("dino", "test_resnet", model_options={"freeze_last_layer": 0.5})
    model(*views())["loss"].backward()
    last = [p for p in model.projector.last_layer.parameters() if p.requires_grad]  # weight_g is fixed
    assert last
    model.before_optimizer_step(0.5)  # the official `if epoch >= freeze_last_layer: return`
    assert all(p.grad is not None for p in last)
    model.before_optimizer_step(0.49)
    assert all(p.grad is None for p in last)


@pytest.mark.parametrize(
    ("progress", "expected"), [(-0.5, 0.99), (0.0, 0.99), (0.5, 0.995), (1.0, 1.0), (1.5, 1.0)]
)
def test_cosine_momentum_runs_from_base_to_one_and_stays_there(progress, expected):
    assert cosine_momentum(0.99, progress) == pytest.approx(expected, abs=1e-12)


def test_register_method_refuses_a_taken_name_unless_told(monkeypatch):
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # the registry is restored afterwards
    simclr = get_method_spec("simclr")
    warmer = dataclasses.replace(simclr, name="warm-simclr", loss_kwargs={"temperature": 1.0})
    assert register_method(warmer) is warmer and get_method_spec("warm-simclr") is warmer
    with pytest.raises(ValueError, match="'warm-simclr' is already registered; pass overwrite=True"):
        register_method(dataclasses.replace(warmer))
    replacement = dataclasses.replace(warmer, loss_kwargs={"temperature": 2.0})
    register_method(replacement, overwrite=True)
    assert create_method("warm-simclr", "test_resnet").criterion.temperature == 2.0


def test_the_teacher_is_never_trained():
    model = create_method("byol", "test_resnet")
    teacher = [*model.teacher_backbone.parameters(), *model.teacher_projector.parameters()]
    assert teacher and not any(p.requires_grad for p in teacher)
    assert model.momentum_base == 0.99  # BYOL Sec. 3.2: τ_base = 0.99


def test_unknown_loss_options_name_the_valid_settings():
    with pytest.raises(
        ValueError, match=r"^loss_options \['tau'\] are not settings of SimCLRLoss; valid: temperature"
    ):
        create_method("simclr", "test_resnet", loss_options={"tau": 1.0})
