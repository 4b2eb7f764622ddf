"""Request difficulty as the server uses it: the classifier and target-share calibration.

Training and evaluation live in `gateway_tools` and are never imported from here.
"""

from gateway.difficulty.calibration import ShareCalibrator, quantile_of
from gateway.difficulty.classifier import DifficultyClassifier
from gateway.difficulty.request import RequestView, view_request

__all__ = ["DifficultyClassifier", "RequestView", "ShareCalibrator", "quantile_of", "view_request"]
