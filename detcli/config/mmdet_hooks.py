"""``det config import``'s ``custom_hooks``: MMDetection's hooks as det's, where det has them.

=====================================================  =============================================
MMDetection 3.x (MMEngine)                              det
=====================================================  =============================================
``EMAHook`` (``ema_type`` ``ExpMomentumEMA`` or         ``EMAHook``: ``ema_type``, ``momentum``,
MMEngine's default ``ExponentialMovingAverage``)        ``gamma`` (ExpMomentumEMA's), ``interval``,
                                                        ``update_buffers``
``PipelineSwitchHook``                                  ``PipelineSwitchHook``: ``switch_epoch``, and
                                                        ``switch_pipeline`` translated as a training
                                                        pipeline (:func:`~detcli.config.mmdet_sections.translate_pipeline`)
``EarlyStoppingHook``                                   ``EarlyStoppingHook``: ``monitor`` less
                                                        CocoMetric's ``coco/`` prefix, ``rule``,
                                                        ``min_delta`` (MMEngine's default 0.1),
                                                        ``patience``, ``stopping_threshold``
``NumClassCheckHook``                                   ``NumClassCheckHook``
=====================================================  =============================================

The written list starts with det's default ``NumClassCheckHook`` (a check of the dataset's
classes against the head before training) when the file's lacks it. Every other hook, and
every argument det's hook has no counterpart for (``priority``: det orders its hooks itself;
``EMAHook.begin_epoch``...), is listed with the reason; a hook whose arguments cannot all be
kept is left out whole rather than run differently. A config without ``custom_hooks`` writes
none (the preset's stay).
"""

from __future__ import annotations

from detcli.config.mmdet_sections import Untranslated, translate_pipeline

EMA_TYPES = ("ExpMomentumEMA", "ExponentialMovingAverage")
MMENGINE_EMA_TYPE = "ExponentialMovingAverage"  # MMEngine's EMAHook default
PRIORITY = "det orders its hooks itself (EMAHook before evaluation and saving)"
# MMDetection / MMEngine hooks det has no counterpart for, and why
NO_COUNTERPART = {
    "CheckInvalidLossHook": "det's trainer stops on a non-finite loss itself "
                            "(and saves nan_iter_N.pth)",
    "SyncNormHook": "det has no hook that syncs norm statistics across processes before "
                    "evaluating (SyncBN in norm_cfg syncs them while training)",
    "YOLOXModeSwitchHook": "det has no YOLOX",
    "MeanTeacherHook": "det has no semi-supervised training",
    "MemoryProfilerHook": "det has no memory profiler hook",
    "DetVisualizationHook": "det draws with det test --show-dir / det viz",
    "SetEpochInfoHook": "MMDetection's hook for models that read the epoch; det has none",
}


def _extra(hook: dict, index: int, kept: set[str], out: list[Untranslated],
           reasons: dict[str, str]) -> bool:
    """List ``hook``'s arguments outside ``kept`` (their reasons from ``reasons``); True when
    one of them changes what the hook does (any not named ``priority``)."""
    changes = False
    for key in sorted(set(hook) - kept - {"type"}):
        reason = reasons.get(key, f"{hook['type']} in det has no {key!r} argument")
        out.append(Untranslated(f"custom_hooks[{index}].{key}", reason))
        changes = changes or key != "priority"
    return changes


def _ema(hook: dict, index: int, out: list[Untranslated]) -> dict | None:
    ema_type = hook.get("ema_type", MMENGINE_EMA_TYPE)
    if ema_type not in EMA_TYPES:
        out.append(Untranslated(f"custom_hooks[{index}]", f"EMAHook(ema_type={ema_type!r}): det "
                                f"averages with {' or '.join(EMA_TYPES)}; left out"))
        return None
    args = ("momentum", "interval", "update_buffers") + (
        ("gamma",) if ema_type == "ExpMomentumEMA" else ())
    kept = set(args) | {"ema_type"}
    defaults = {"begin_iter": 0, "begin_epoch": 0, "strict_load": False}  # MMEngine's
    kept |= {k for k, v in defaults.items() if hook.get(k, v) == v}
    if _extra(hook, index, kept, out, {
            "priority": PRIORITY,
            "begin_iter": "det's EMAHook averages from the first iteration",
            "begin_epoch": "det's EMAHook averages from the first iteration",
            "strict_load": "MMEngine's loading option for the averaged weights; det's "
                           "EMAHook has none",
            "device": "det keeps the average on the model's device"}):
        out.append(Untranslated(f"custom_hooks[{index}]", "EMAHook: an argument above det "
                                                          "cannot keep; left out"))
        return None
    return {"type": "EMAHook", "ema_type": ema_type,
            **{k: hook[k] for k in args if k in hook}}


def _pipeline_switch(hook: dict, index: int, preprocessor: dict,
                     out: list[Untranslated]) -> dict | None:
    where = f"custom_hooks[{index}]"
    pipeline = translate_pipeline(hook.get("switch_pipeline"), f"{where}.switch_pipeline",
                                  preprocessor, test=False, out=out)
    epoch = hook.get("switch_epoch")
    if pipeline is None or not isinstance(epoch, int):
        out.append(Untranslated(where, "PipelineSwitchHook: " + (
            "its switch_pipeline does not translate" if pipeline is None
            else f"switch_epoch {epoch!r} is not an integer") + "; left out"))
        return None
    if _extra(hook, index, {"switch_epoch", "switch_pipeline"}, out, {"priority": PRIORITY}):
        out.append(Untranslated(where, "PipelineSwitchHook: an argument above det cannot "
                                       "keep; left out"))
        return None
    return {"type": "PipelineSwitchHook", "switch_epoch": epoch, "switch_pipeline": pipeline}


def _early_stopping(hook: dict, index: int, out: list[Untranslated]) -> dict | None:
    monitor = hook.get("monitor")
    kept = {"monitor", "rule", "min_delta", "patience", "stopping_threshold"}
    kept |= {k for k, v in {"strict": False, "check_finite": True}.items()
             if hook.get(k, v) == v}  # MMEngine's defaults, which det's hook behaves as
    if not isinstance(monitor, str) or _extra(hook, index, kept, out, {"priority": PRIORITY}):
        out.append(Untranslated(f"custom_hooks[{index}]", "EarlyStoppingHook: "
                                + ("no monitor name" if not isinstance(monitor, str)
                                   else "an argument above det cannot keep") + "; left out"))
        return None
    return {"type": "EarlyStoppingHook", "monitor": monitor.removeprefix("coco/"),
            "min_delta": hook.get("min_delta", 0.1),  # MMEngine's default; det's is 0
            **{k: hook[k] for k in ("rule", "patience", "stopping_threshold")
               if hook.get(k) is not None}}


def translate_custom_hooks(values: dict, preprocessor: dict,
                           out: list[Untranslated]) -> list[dict] | None:
    """det's ``custom_hooks`` for the MMDetection config's (module docstring); None when the
    config has none."""
    if "custom_hooks" not in values:
        return None
    hooks = values["custom_hooks"]
    if not isinstance(hooks, (list, tuple)) or not all(isinstance(h, dict) for h in hooks):
        out.append(Untranslated("custom_hooks", "not a list of hook dicts det reads"))
        return None
    translated: list[dict] = []
    for index, hook in enumerate(hooks):
        kind = hook.get("type")
        if kind == "EMAHook":
            item = _ema(hook, index, out)
        elif kind == "PipelineSwitchHook":
            item = _pipeline_switch(hook, index, preprocessor, out)
        elif kind == "EarlyStoppingHook":
            item = _early_stopping(hook, index, out)
        elif kind == "NumClassCheckHook":
            _extra(hook, index, set(), out, {"priority": PRIORITY})
            item = {"type": "NumClassCheckHook"}
        else:
            reason = NO_COUNTERPART.get(kind, "det has no hook of that name (it has EMAHook, "
                                              "PipelineSwitchHook, EarlyStoppingHook, "
                                              "NumClassCheckHook)")
            out.append(Untranslated(f"custom_hooks[{index}]", f"{kind}: {reason}"))
            item = None
        if item is not None:
            translated.append(item)
    if not any(h["type"] == "NumClassCheckHook" for h in translated):
        translated.insert(0, {"type": "NumClassCheckHook"})  # det's default check
    return translated
