"""Evaluation of frozen or fine-tuned encoders: feature extraction, kNN, linear probe."""

from zoo.probe.features import extract_features
from zoo.probe.knn import knn_accuracy, knn_predict
from zoo.probe.linear import LinearProbe, fit_linear_probe
from zoo.probe.metrics import classification_metrics

__all__ = [
    "LinearProbe",
    "classification_metrics",
    "extract_features",
    "fit_linear_probe",
    "knn_accuracy",
    "knn_predict",
]
