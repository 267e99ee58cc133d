"""Scoring detections against a dataset's ground truth (no model, no inference here).

- :mod:`detcli.evaluation.config`: ``[evaluation]`` (which metrics, the COCOeval backend, VOC
  settings).
- :mod:`detcli.evaluation.evaluator`: the ``Evaluator`` protocol and ``build_evaluator``, the
  one place the engine gets its evaluator from.
- :mod:`detcli.evaluation.coco`: COCO metrics through pycocotools or faster-coco-eval
  (``CocoEvaluator``).
- :mod:`detcli.evaluation.voc`: Pascal VOC mAP, 11-point and area (``VocEvaluator``).
- :mod:`detcli.evaluation.report`: the evaluation report behind ``det test --plots``
  (:mod:`~detcli.evaluation.pr_curves`, :mod:`~detcli.evaluation.confusion`,
  :mod:`~detcli.evaluation.errors`, :mod:`~detcli.evaluation.worst_images`).

Nothing is imported here, so reading the config (``detcli.evaluation.config``) loads no
evaluator.
"""
