"""Scoring detections against a dataset's ground truth (no model, no inference here).

- :mod:`detcli.evaluation.coco`: COCO metrics through pycocotools (``CocoEvaluator``).
"""
