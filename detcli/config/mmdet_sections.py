"""``det config import``'s data and schedule sections: MMDetection 3.x (and 2.x) names -> det's.

det's data and schedule sections use MMDetection 2.x's names (``data.train`` with
``img_prefix``, ``lr_config``, ``checkpoint_config``), so a 2.x config's ``data``,
``lr_config``, ``optimizer_config``, ``checkpoint_config``, ``evaluation`` and ``log_config``
carry over as they are. A 3.x config's are translated:

=====================================================  =============================================
MMDetection 3.x                                         det
=====================================================  =============================================
``train_dataloader.batch_size`` / ``num_workers``       ``data.samples_per_gpu`` / ``workers_per_gpu``
``persistent_workers``, ``AspectRatioBatchSampler``     ``data.persistent_workers``, ``group_by_aspect_ratio``
``{train,val,test}_dataloader.dataset``                 ``data.{train,val,test}``: ``type``,
                                                        ``data_root + ann_file`` -> ``ann_file``,
                                                        ``data_root + data_prefix.img`` -> ``img_prefix``,
                                                        ``metainfo.classes`` -> ``classes``,
                                                        ``filter_cfg`` -> ``filter_empty_gt`` / ``min_size``
``pipeline``                                            ``pipeline``, when every transform maps
                                                        (:func:`translate_pipeline`)
``optim_wrapper.optimizer`` / ``.clip_grad``            ``optimizer`` / ``optimizer_config.grad_clip``
                                                        (``clip_grad=None``: ``false``, no clipping)
``optim_wrapper.paramwise_cfg``                         ``optimizer.paramwise_cfg``
``param_scheduler``: ``LinearLR`` / ``ConstantLR``     ``lr_config.warmup = "linear"`` / ``"constant"``,
from 0 (by iteration)                                   ``warmup_iters = end - 1``, ``warmup_ratio =
                                                        start_factor`` / ``factor``
``MultiStepLR`` / ``CosineAnnealingLR`` (whole run)     ``lr_config.policy = "step"`` (``step``, ``gamma``)
                                                        / ``"CosineAnnealing"`` (``min_lr = eta_min``);
                                                        ``CosineAnnealingLR`` from a later epoch to
                                                        the end: ``"FlatCosineAnnealing"``
                                                        (``begin_epoch``)
``train_cfg.max_epochs`` / ``val_interval``             ``runner.max_epochs`` / ``evaluation.interval``
``val_evaluator.metric``                                ``evaluation.metric``
``default_hooks.checkpoint.interval`` / ``max_keep``    ``checkpoint_config.interval`` / ``max_keep_ckpts``
``default_hooks.logger.interval``                       ``log_config.interval``
``auto_scale_lr``                                       ``auto_scale_lr``
=====================================================  =============================================

A 3.x pipeline ends with ``PackDetInputs`` and leaves normalising and padding to the model's
``data_preprocessor``; det's pipeline does both: ``PackDetInputs`` becomes ``Normalize`` (the
preprocessor's ``mean``, ``std``, ``bgr_to_rgb``), ``Pad`` (its ``pad_size_divisor``, when
above 1), ``DefaultFormatBundle`` and ``Collect`` (the boxes, labels and masks the pipeline
loads); a test pipeline's steps go inside ``MultiScaleFlipAug`` at the ``Resize`` scale, as
det's presets write it. ``Resize.scale`` is ``img_scale`` and ``RandomFlip.prob`` is
``flip_ratio``; the transforms det has under MMDetection's names (``RandomResize``,
``RandomChoiceResize``, ``RandomCrop``, ``Pad``, ``PhotoMetricDistortion``, ``Mosaic``,
``CachedMosaic``, ``MixUp``, ``CachedMixUp``, ``RandomAffine``, ``YOLOXHSVRandomAug``,
``FilterAnnotations``) keep their arguments, less ``backend_args``, and ``RandomChoice``'s
branches are translated the same way. A pipeline with any
other transform is not translated (the preset's stays) and the transform is named; so is every
scheduler, sampler, wrapper or dataset type det has no counterpart for.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Callable

from detcli.config.mmdet_reader import Unread


@dataclass(frozen=True)
class Untranslated:
    """A key of the MMDetection config that is not in the det TOML, and why."""

    key: str
    reason: str


KEPT_AS_IS = {"RandomResize", "RandomChoiceResize", "RandomCrop", "Pad", "PhotoMetricDistortion",
              "Mosaic", "CachedMosaic", "MixUp", "CachedMixUp", "RandomAffine",
              "YOLOXHSVRandomAug", "FilterAnnotations", "LoadImageFromFile", "LoadAnnotations"}
DROPPED_ARGS = ("backend_args", "file_client_args")
DATASET_TYPES = {"CocoDataset", "VOCDataset"}
LOOP_REASONS = {  # train_cfg keys of MMEngine's EpochBasedTrainLoop det has no setting for
    "dynamic_intervals": "det validates every evaluation.interval epochs throughout (MMEngine "
                         "changes the interval from the listed epochs on)",
    "val_begin": "det validates from the first evaluation.interval epoch",
}


def lists_for_tuples(value: Any) -> Any:
    """Tuples as lists, recursively (TOML has arrays only)."""
    if isinstance(value, dict):
        return {k: lists_for_tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [lists_for_tuples(v) for v in value]
    return value


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _rename(step: dict, names: dict[str, str]) -> dict:
    return {names.get(k, k): v for k, v in step.items() if k not in DROPPED_ARGS}


def _normalize(preprocessor: dict) -> dict | None:
    if "mean" not in preprocessor or "std" not in preprocessor:
        return None
    return {"type": "Normalize", "mean": list(preprocessor["mean"]),
            "std": list(preprocessor["std"]), "to_rgb": bool(preprocessor.get("bgr_to_rgb", False))}


def _packed(steps: list[dict], preprocessor: dict, test: bool) -> list[dict]:
    """What ``PackDetInputs`` and the data preprocessor do, as det's steps."""
    out = []
    normalize = _normalize(preprocessor)
    if normalize is not None:
        out.append(normalize)
    divisor = preprocessor.get("pad_size_divisor", 1)
    if isinstance(divisor, int) and divisor > 1:
        out.append({"type": "Pad", "size_divisor": divisor})
    if test:
        return out + [{"type": "ImageToTensor", "keys": ["img"]},
                      {"type": "Collect", "keys": ["img"]}]
    loads = next((s for s in steps if s.get("type") == "LoadAnnotations"), {})
    keys = ["img", "gt_bboxes", "gt_labels"] + (["gt_masks"] if loads.get("with_mask") else [])
    return out + [{"type": "DefaultFormatBundle"}, {"type": "Collect", "keys": keys}]


STEP_RULES: dict[str, Callable[[dict], dict]] = {
    "Resize": lambda s: _rename(s, {"scale": "img_scale"}),
    "RandomFlip": lambda s: _rename(s, {"prob": "flip_ratio"}),
    **{name: (lambda s: _rename(s, {})) for name in KEPT_AS_IS},
}


def _steps(steps: Any, where: str, preprocessor: dict, *, test: bool,
           out: list[Untranslated]) -> list[dict] | None:
    """Each step of ``steps`` as det's (``RandomChoice``'s branches too); None when one has
    no counterpart (named in ``out``)."""
    kept: list[dict] = []
    for index, step in enumerate(steps):
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "PackDetInputs":
            kept += _packed(list(steps), preprocessor, test)
        elif kind == "RandomChoice" and isinstance(step.get("transforms"), (list, tuple)):
            branches = [_steps(branch, f"{where}[{index}].transforms", preprocessor, test=test,
                               out=out) if isinstance(branch, (list, tuple)) else None
                        for branch in step["transforms"]]
            if any(branch is None for branch in branches):
                return None
            kept.append({**_rename(step, {}), "transforms": branches})
        elif kind in STEP_RULES:
            if test and kind == "LoadAnnotations":
                continue  # det's evaluation reads the annotations itself
            kept.append(STEP_RULES[kind](dict(step)))
        else:
            out.append(Untranslated(where, f"transform {index} ({kind}) has no det counterpart "
                                           "under that name; the preset's pipeline is kept"))
            return None
    return kept


def translate_pipeline(steps: Any, where: str, preprocessor: dict, *, test: bool,
                       out: list[Untranslated]) -> list[dict] | None:
    """det's pipeline for MMDetection 3.x's ``steps`` (module docstring); None, with the reason
    in ``out``, when a step does not map. ``test``: a val/test pipeline."""
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, dict) for s in steps):
        out.append(Untranslated(where, "not a list of transforms det reads"))
        return None
    kept = _steps(steps, where, preprocessor, test=test, out=out)
    if kept is None or not test:
        return kept
    resize = next((s for s in kept if s["type"] == "Resize"), None)
    if resize is None or "img_scale" not in resize:
        out.append(Untranslated(where, "a test pipeline without Resize(scale=...) det can put "
                                       "in MultiScaleFlipAug; the preset's pipeline is kept"))
        return None
    load = kept[:1] if kept[0]["type"] == "LoadImageFromFile" else []
    inner: list[dict] = []
    for step in kept[len(load):]:
        if step is resize:  # the scale moves to MultiScaleFlipAug, and the flip follows
            inner += [{k: v for k, v in step.items() if k != "img_scale"}, {"type": "RandomFlip"}]
        else:
            inner.append(step)
    return load + [{"type": "MultiScaleFlipAug", "img_scale": resize["img_scale"],
                    "flip": False, "transforms": inner}]


def _joined(root: Any, path: Any) -> Any:
    if not isinstance(path, str) or not isinstance(root, str) or posixpath.isabs(path):
        return path
    return posixpath.join(root, path)


def translate_dataset(dataset: Any, where: str, preprocessor: dict, *, test: bool,
                      out: list[Untranslated]) -> dict | None:
    """det's dataset config for MMDetection 3.x's ``dataset`` dict (module docstring)."""
    dataset = _dict(dataset)
    kind = dataset.get("type")
    if kind not in DATASET_TYPES:
        out.append(Untranslated(f"{where}.type", f"dataset type {kind!r}: det has "
                                f"{', '.join(sorted(DATASET_TYPES))} (and YOLODataset)"))
        return None
    root = dataset.get("data_root")
    prefix = _dict(dataset.get("data_prefix"))
    tree: dict[str, Any] = {"type": kind, "ann_file": _joined(root, dataset.get("ann_file")),
                            "img_prefix": _joined(root, prefix.get("img", prefix.get("img_path",
                                                                                     "")))}
    classes = _dict(dataset.get("metainfo")).get("classes")
    if classes is not None:
        tree["classes"] = list(classes)
    filters = _dict(dataset.get("filter_cfg"))
    if "filter_empty_gt" in filters:
        tree["filter_empty_gt"] = filters["filter_empty_gt"]
    if "min_size" in filters:
        tree["min_size"] = filters["min_size"]
    if "test_mode" in dataset:
        tree["test_mode"] = dataset["test_mode"]
    pipeline = translate_pipeline(dataset.get("pipeline", []), f"{where}.pipeline", preprocessor,
                                  test=test, out=out)
    if pipeline is not None:
        tree["pipeline"] = pipeline
    for key in sorted(set(dataset) - {"type", "data_root", "ann_file", "data_prefix", "metainfo",
                                      "filter_cfg", "test_mode", "pipeline", *DROPPED_ARGS}):
        out.append(Untranslated(f"{where}.{key}", "no det dataset setting of that name"))
    return tree


def translate_data(values: dict, preprocessor: dict, out: list[Untranslated]) -> dict | None:
    """det's ``data`` section: 2.x's ``data`` as it is, else 3.x's dataloaders translated."""
    if isinstance(values.get("data"), dict):
        return dict(values["data"])
    train = _dict(values.get("train_dataloader"))
    if not train and not values.get("val_dataloader"):
        return None
    data: dict[str, Any] = {}
    for key, name in (("batch_size", "samples_per_gpu"), ("num_workers", "workers_per_gpu"),
                      ("persistent_workers", "persistent_workers")):
        if key in train:
            data[name] = train[key]
    batch_sampler = _dict(train.get("batch_sampler")).get("type")
    if batch_sampler == "AspectRatioBatchSampler":
        data["group_by_aspect_ratio"] = True
    elif batch_sampler is not None:
        out.append(Untranslated("train_dataloader.batch_sampler", f"{batch_sampler}: det "
                                "batches at random or by aspect ratio (group_by_aspect_ratio)"))
    sampler = _dict(train.get("sampler")).get("type")
    if sampler not in (None, "DefaultSampler", "InfiniteSampler"):
        out.append(Untranslated("train_dataloader.sampler", f"{sampler}: det samples every "
                                                             "image once an epoch"))
    for split in ("train", "val", "test"):
        loader = values.get(f"{split}_dataloader")
        if isinstance(loader, dict) and isinstance(loader.get("dataset"), dict):
            dataset = translate_dataset(loader["dataset"], f"{split}_dataloader.dataset",
                                        preprocessor, test=split != "train", out=out)
            if dataset is not None:
                data[split] = dataset
    return data


def _lr_config(schedulers: Any, max_epochs: Any, out: list[Untranslated]) -> dict | None:
    """det's ``lr_config`` for MMDetection 3.x's ``param_scheduler`` list (module docstring)."""
    items = schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]
    config: dict[str, Any] = {}
    for index, item in enumerate(items):
        item = _dict(item)
        kind, where = item.get("type"), f"param_scheduler[{index}]"
        by_epoch = item.get("by_epoch", True)
        # MMEngine's LinearLR / ConstantLR(end=E) reach the full lr at iteration E - 1 (their
        # total_iters is end - begin - 1): det's warmup_iters W = E - 1
        if kind == "LinearLR" and item.get("begin", 0) == 0 and not by_epoch:
            config.update(warmup="linear", warmup_iters=int(item.get("end", 1)) - 1,
                          warmup_ratio=item.get("start_factor", 1.0 / 3), warmup_by_epoch=False)
        elif kind == "ConstantLR" and item.get("begin", 0) == 0 and not by_epoch:
            config.update(warmup="constant", warmup_iters=int(item.get("end", 1)) - 1,
                          warmup_ratio=item.get("factor", 1.0 / 3), warmup_by_epoch=False)
        elif kind == "MultiStepLR" and by_epoch:
            config.update(policy="step", step=list(item.get("milestones", [])),
                          gamma=item.get("gamma", 0.1))
        elif kind == "CosineAnnealingLR" and by_epoch and item.get("end") in (None, max_epochs):
            begin = item.get("begin", 0)
            config.update(min_lr=item.get("eta_min", 0.0), min_lr_ratio=False)  # one floor
            if begin == 0:
                config.update(policy="CosineAnnealing")
            else:
                config.update(policy="FlatCosineAnnealing", begin_epoch=begin)
        else:
            args = ", ".join(f"{k}={v}" for k, v in item.items() if k != "type")
            out.append(Untranslated(where, f"{kind}({args}) has no det lr_config counterpart; "
                                           "the preset's schedule is kept"))
            return None
    return config if "policy" in config else None


def translate_schedule(values: dict, out: list[Untranslated]) -> dict[str, Any]:
    """det's optimizer, optimizer_config, lr_config, runner, evaluation, checkpoint_config,
    log_config and auto_scale_lr sections (2.x's as they are; 3.x's translated)."""
    tree: dict[str, Any] = {}
    for name in ("optimizer", "optimizer_config", "lr_config", "checkpoint_config",
                 "evaluation", "log_config", "auto_scale_lr"):  # 2.x's names are det's
        if isinstance(values.get(name), dict):
            tree[name] = dict(values[name])
    wrapper = _dict(values.get("optim_wrapper"))
    if isinstance(wrapper.get("optimizer"), dict):
        tree["optimizer"] = dict(wrapper["optimizer"])
        if isinstance(wrapper.get("paramwise_cfg"), dict):
            tree["optimizer"]["paramwise_cfg"] = wrapper["paramwise_cfg"]
    if isinstance(wrapper.get("clip_grad"), dict):
        tree["optimizer_config"] = {"grad_clip": wrapper["clip_grad"]}
    elif "clip_grad" in wrapper and wrapper["clip_grad"] is None:  # clipping switched off
        tree["optimizer_config"] = {"grad_clip": False}
    if wrapper.get("type") not in (None, "OptimWrapper"):
        out.append(Untranslated("optim_wrapper.type", f"{wrapper['type']}: det's mixed precision "
                                                      "is det train --amp"))
    loop = _dict(values.get("train_cfg"))
    runner = _dict(values.get("runner"))
    epochs = loop.get("max_epochs", runner.get("max_epochs"))
    if isinstance(epochs, int):
        tree["runner"] = {"max_epochs": epochs}
    if loop.get("type") not in (None, "EpochBasedTrainLoop"):
        out.append(Untranslated("train_cfg.type", f"{loop['type']}: det trains by epochs"))
    for key in sorted(set(loop) - {"type", "max_epochs", "val_interval"}):
        out.append(Untranslated(f"train_cfg.{key}", LOOP_REASONS.get(
            key, "no det runner setting of that name")))
    if "param_scheduler" in values:
        lr_config = _lr_config(values["param_scheduler"], epochs, out)
        if lr_config is not None:
            tree["lr_config"] = lr_config
    evaluation = dict(tree.get("evaluation", {}))
    if isinstance(loop.get("val_interval"), int):
        evaluation["interval"] = loop["val_interval"]
    metric = _dict(values.get("val_evaluator")).get("metric")
    if isinstance(metric, (str, list, tuple)) and not isinstance(metric, Unread):
        evaluation["metric"] = metric
    if evaluation:
        tree["evaluation"] = evaluation
    hooks = _dict(values.get("default_hooks"))
    checkpoint = _dict(hooks.get("checkpoint"))
    saved = {k: checkpoint[k] for k in ("interval", "max_keep_ckpts") if k in checkpoint}
    if saved:
        tree["checkpoint_config"] = saved
    logger = _dict(hooks.get("logger"))
    if "interval" in logger:
        tree["log_config"] = {"interval": logger["interval"]}
    return tree
