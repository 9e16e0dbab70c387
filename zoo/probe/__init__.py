"""Evaluation of frozen or fine-tuned encoders: features, kNN, linear probe, the study's MLP head, fine-tuning,
SimpleShot and few-shot episodes, label fractions and metrics. Works on any encoder, including what
``zoo.load(..., features_only=True)`` returns."""

from zoo.probe.features import extract_features
from zoo.probe.finetune import fine_tune
from zoo.probe.fractions import label_fraction_indices
from zoo.probe.knn import knn_accuracy, knn_predict
from zoo.probe.linear import LinearProbe, fit_linear_probe
from zoo.probe.metrics import choose_thresholds, classification_metrics, macro_auroc, multilabel_metrics
from zoo.probe.mlp import MLPHead, fit_mlp_head
from zoo.probe.multilabel import MultiLabelProbe, fit_multilabel_probe, knn_multilabel, masked_bce
from zoo.probe.objective import objective_for
from zoo.probe.simpleshot import few_shot_episodes, shot_counts, simpleshot_predict

__all__ = [
    "LinearProbe",
    "MLPHead",
    "MultiLabelProbe",
    "choose_thresholds",
    "classification_metrics",
    "extract_features",
    "few_shot_episodes",
    "fine_tune",
    "fit_linear_probe",
    "fit_mlp_head",
    "fit_multilabel_probe",
    "knn_accuracy",
    "knn_multilabel",
    "knn_predict",
    "label_fraction_indices",
    "macro_auroc",
    "masked_bce",
    "multilabel_metrics",
    "objective_for",
    "shot_counts",
    "simpleshot_predict",
]
