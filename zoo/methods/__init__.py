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
    MethodSpec,
    create_method,
    get_method_spec,
    list_methods,
    register_method,
    scaled,
)
from zoo.methods.model import SSLModel

__all__ = ["MethodSpec", "SSLModel", "create_method", "get_method_spec", "list_methods", "register_method"]


def _simsiam_predictor(dim: int, paper_mode: bool) -> SimSiamPredictionHead | None:
    return None if paper_mode else SimSiamPredictionHead(dim, max(8, dim // 4), dim)


register_method(
    MethodSpec(
        name="simclr",
        paper="Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020",
        make_projector=lambda f: SimCLRProjectionHead(f, scaled(512, f, minimum=128), 128),
        make_loss=lambda paper_mode: SimCLRLoss(temperature=0.5),
    )
)
register_method(
    MethodSpec(
        name="dclw",
        paper="Yeh et al., Decoupled Contrastive Learning, ECCV 2022",
        make_projector=lambda f: SimCLRProjectionHead(f, scaled(512, f, minimum=128), 128),
        make_loss=lambda paper_mode: DCLWLoss(temperature=0.1, sigma=0.5, paper_mode=paper_mode),
    )
)
register_method(
    MethodSpec(
        name="simsiam",
        paper="Chen & He, Exploring Simple Siamese Representation Learning, CVPR 2021",
        make_projector=lambda f: SimSiamProjectionHead(f, scaled(2048, f), scaled(512, f)),
        make_loss=lambda paper_mode: SimSiamLoss(),
        make_predictor=_simsiam_predictor,
    )
)
register_method(
    MethodSpec(
        name="vicreg",
        paper="Bardes, Ponce & LeCun, VICReg: Variance-Invariance-Covariance Regularization, ICLR 2022",
        make_projector=lambda f: VICRegProjectionHead(f, scaled(4096, f), scaled(4096, f)),
        make_loss=lambda paper_mode: VICRegLoss(paper_mode=paper_mode),
    )
)
register_method(
    MethodSpec(
        name="barlowtwins",
        paper="Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy Reduction, ICML 2021",
        make_projector=lambda f: BarlowTwinsProjectionHead(f, scaled(4096, f), scaled(4096, f)),
        make_loss=lambda paper_mode: BarlowTwinsLoss(lambda_offdiag=0.0051),
    )
)
