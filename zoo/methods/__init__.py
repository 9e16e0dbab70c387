"""SSL methods as registered specs: the study's (SimCLR, DCLW, SimSiam, VICReg), Barlow Twins, and the
teacher-student methods with an EMA teacher (BYOL, MoCo v3, DINO)."""

from zoo.heads import (
    BarlowTwinsProjectionHead,
    BYOLProjectionHead,
    DINOHead,
    MoCoV3ProjectionHead,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    VICRegProjectionHead,
)
from zoo.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    DCLWLoss,
    DINOLoss,
    MoCoV3Loss,
    SimCLRLoss,
    SimSiamLoss,
    VICRegLoss,
)
from zoo.methods._registry import (
    METHODS,
    MethodSpec,
    create_method,
    get_method_spec,
    list_methods,
    register_method,
    scaled,
)
from zoo.methods.model import BYOLModel, DINOModel, MoCoV3Model, SSLModel, TeacherStudentModel

__all__ = [
    "METHODS",
    "MethodSpec",
    "SSLModel",
    "TeacherStudentModel",
    "create_method",
    "get_method_spec",
    "list_methods",
    "register_method",
]


def _simsiam_predictor(dim: int, paper_mode: bool) -> SimSiamPredictionHead | None:
    return None if paper_mode else SimSiamPredictionHead(dim, max(8, dim // 4), dim)


register_method(
    MethodSpec(
        name="simclr",
        citation="Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020",
        make_projector=lambda f: SimCLRProjectionHead(f, scaled(512, f, minimum=128), 128),
        loss=SimCLRLoss,
        loss_kwargs={"temperature": 0.5},  # the study; SimCLR's paper tunes 0.1-1.0
    )
)
register_method(
    MethodSpec(
        name="dclw",
        citation="Yeh et al., Decoupled Contrastive Learning, ECCV 2022",
        make_projector=lambda f: SimCLRProjectionHead(f, scaled(512, f, minimum=128), 128),
        loss=DCLWLoss,
        loss_kwargs={"temperature": 0.1, "sigma": 0.5},
        paper_loss_kwargs={"paper_mode": True},  # one-sided, weight not detached
    )
)
register_method(
    MethodSpec(
        name="simsiam",
        citation="Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021",
        make_projector=lambda f: SimSiamProjectionHead(f, scaled(2048, f), scaled(512, f)),
        loss=SimSiamLoss,
        make_predictor=_simsiam_predictor,
        loss_takes_predictions=True,
    )
)
register_method(
    MethodSpec(
        name="vicreg",
        citation="Bardes, Ponce & LeCun, VICReg: Variance-Invariance-Covariance Regularization, ICLR 2022",
        make_projector=lambda f: VICRegProjectionHead(f, scaled(4096, f), scaled(4096, f)),
        loss=VICRegLoss,
        loss_kwargs={"invariance_weight": 25.0, "variance_weight": 25.0, "covariance_weight": 1.0},
        paper_loss_kwargs={"paper_mode": True},  # variance term summed over the branches
    )
)
register_method(
    MethodSpec(
        name="barlowtwins",
        citation="Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy Reduction, ICML 2021",
        make_projector=lambda f: BarlowTwinsProjectionHead(f, scaled(4096, f), scaled(4096, f)),
        loss=BarlowTwinsLoss,
        loss_kwargs={"lambda_offdiag": 0.0051},
    )
)


def _byol_predictor(dim: int, paper_mode: bool) -> BYOLProjectionHead:
    return BYOLProjectionHead(dim, max(256, dim * 16), dim)  # 256 → 4096 → 256


def _mocov3_projector(num_features: int) -> MoCoV3ProjectionHead:
    hidden = scaled(4096, num_features, minimum=256)
    if num_features >= 2048:  # the ResNet-50 head: 2048 → 4096 → 256
        return MoCoV3ProjectionHead([num_features, hidden, 256])
    return MoCoV3ProjectionHead([num_features, hidden, hidden, 256])  # the ViT head: D → 4096 → 4096 → 256


register_method(
    MethodSpec(
        name="byol",
        citation="Grill et al., Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning, NeurIPS 2020",
        make_projector=lambda f: BYOLProjectionHead(f, scaled(4096, f, minimum=256), 256),
        loss=BYOLLoss,
        make_predictor=_byol_predictor,
        model=BYOLModel,
        model_kwargs={"momentum": 0.99},  # cosine to 1 (the official 300-epoch setting)
        exported_encoder="the online encoder",
    )
)
register_method(
    MethodSpec(
        name="mocov3",
        citation="Chen, Xie & He, An Empirical Study of Training Self-Supervised Vision Transformers, ICCV 2021",
        make_projector=_mocov3_projector,
        loss=MoCoV3Loss,
        loss_kwargs={"temperature": 0.2},  # ViT; the official ResNet-50 configurations use 1.0
        make_predictor=lambda dim, paper_mode: MoCoV3ProjectionHead(
            [dim, max(256, dim * 16), dim], last_bn=False
        ),
        model=MoCoV3Model,
        model_kwargs={"momentum": 0.99},
        exported_encoder="the base (query) encoder",
    )
)
register_method(
    MethodSpec(
        name="dino",
        citation="Caron et al., Emerging Properties in Self-Supervised Vision Transformers, ICCV 2021",
        make_projector=lambda f: DINOHead(
            f, scaled(2048, f, minimum=256), scaled(256, f, minimum=64), scaled(65536, f, minimum=1024)
        ),
        loss=DINOLoss,
        loss_kwargs={
            "student_temp": 0.1,
            "teacher_temp": 0.07,
            "warmup_teacher_temp": 0.04,
            "warmup_teacher_temp_fraction": 0.3,  # the README's ViT-S/16 setting: 30 of 100 epochs
            "center_momentum": 0.9,
        },
        model=DINOModel,
        model_kwargs={"momentum": 0.996, "freeze_last_layer": 0.0},
        run_options=lambda epoch_fraction: {"freeze_last_layer": epoch_fraction},  # the first epoch
        exported_encoder="the teacher (EMA) encoder",
    )
)
