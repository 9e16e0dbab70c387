"""SSL methods of the study (SimCLR, DCLW, SimSiam, VICReg) plus Barlow Twins, as registered specs."""

from zoo.heads import (
    BarlowTwinsProjectionHead,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    VICRegProjectionHead,
)
from zoo.losses import BarlowTwinsLoss, DCLWLoss, SimCLRLoss, SimSiamLoss, VICRegLoss
from zoo.methods._registry import (
    METHODS,
    MethodSpec,
    create_method,
    get_method_spec,
    list_methods,
    register_method,
    scaled,
)
from zoo.methods.model import SSLModel

__all__ = [
    "METHODS",
    "MethodSpec",
    "SSLModel",
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
