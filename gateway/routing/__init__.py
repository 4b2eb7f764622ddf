"""Request difficulty: the classifier, its target-share calibration and the CLI behind it."""

from gateway.routing.calibration import ScoreHistogram, ShareCalibrator
from gateway.routing.classifier import DifficultyClassifier
from gateway.routing.request import RequestView, view_request

__all__ = [
    "DifficultyClassifier",
    "RequestView",
    "ScoreHistogram",
    "ShareCalibrator",
    "view_request",
]
