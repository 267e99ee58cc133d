"""Defaults that ``Detector`` and ``det predict`` share (torch-free, so ``det --help`` stays light)."""

# Detections scoring at or below this are dropped by ``Detector`` and ``det predict`` unless
# told otherwise (``score_thr=`` / ``--score-thr``); the model's own test_cfg.score_thr applies
# first.
DEFAULT_SCORE_THR = 0.3
