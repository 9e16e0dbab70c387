"""Evaluation of frozen or fine-tuned encoders: feature extraction, kNN."""

from zoo.probe.features import extract_features
from zoo.probe.knn import knn_accuracy, knn_predict

__all__ = ["extract_features", "knn_accuracy", "knn_predict"]
