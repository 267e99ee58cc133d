"""``det config import``'s ``tta_model`` and ``tta_pipeline``: MMDetection 3.3's TTA as det's.

=====================================================  =============================================
MMDetection 3.3                                         det
=====================================================  =============================================
``tta_model = dict(type='DetTTAModel', tta_cfg=...)``   ``[tta]``: ``tta_cfg.nms`` as ``tta.nms``,
                                                        ``tta_cfg.max_per_img`` as ``tta.max_per_img``
``tta_pipeline``: ``TestTimeAug(transforms=[...])``     ``data.test.pipeline``: one
                                                        ``MultiScaleFlipAug`` (below)
=====================================================  =============================================

``TestTimeAug`` makes a view for every combination of one transform from each of its lists.
det's ``MultiScaleFlipAug`` varies two things, the scale and the flip, so a ``tta_pipeline``
translates when each of its lists is one of:

- ``Resize`` steps that differ only in ``scale``: ``img_scale`` (the list of scales);
- ``RandomFlip`` steps of ``prob`` 1 or 0, one of them 0 (the unflipped view): ``flip = true``
  with the ``direction`` of those of ``prob`` 1 as ``flip_direction`` (``flip = false`` when
  all are 0);
- a single transform, translated as a test pipeline's is
  (:func:`~detcli.config.mmdet_sections.translate_pipeline`: ``PackDetInputs`` and the data
  preprocessor as det's steps, ``LoadAnnotations`` dropped).

det has no pipeline of its own for TTA: ``det test --tta`` runs every view of
``data.test.pipeline``'s ``MultiScaleFlipAug``, and ``det test`` without it the first view
(first scale, unflipped). So the translated views replace the test pipeline only when their
first view is the translated ``test_pipeline`` (the scale of ``test_pipeline`` is put first
among the scales): otherwise the plain metrics would change, and ``tta_pipeline`` is listed
with the first step that differs (MMDetection 3.3's ``rtmdet_tta.py`` pads to 960 x 960 where
RTMDet's test pipeline pads to 640 x 640). Every other form is listed with the reason, and the
test pipeline stays the import's (or the preset's).
"""

from __future__ import annotations

from typing import Any

from detcli.config.mmdet_sections import Untranslated, lists_for_tuples, translate_pipeline

TTA_MODEL_TYPE = "DetTTAModel"
TTA_CFG_KEYS = ("nms", "max_per_img")


def translate_tta_model(values: dict, out: list[Untranslated]) -> dict | None:
    """det's ``[tta]`` for the config's ``tta_model`` (module docstring); None without one, or
    when it is not a ``DetTTAModel`` (listed)."""
    model = values.get("tta_model")
    if model is None:
        return None
    if not isinstance(model, dict) or model.get("type") != TTA_MODEL_TYPE:
        kind = model.get("type") if isinstance(model, dict) else model
        out.append(Untranslated("tta_model", f"{kind!r}: det's test --tta merges as "
                                             f"{TTA_MODEL_TYPE} does ([tta])"))
        return None
    for key in sorted(set(model) - {"type", "tta_cfg"}):
        out.append(Untranslated(f"tta_model.{key}", "det test --tta merges the model it tests; "
                                                    f"{TTA_MODEL_TYPE} in det has no {key!r}"))
    cfg = model.get("tta_cfg")
    if not isinstance(cfg, dict):
        out.append(Untranslated("tta_model.tta_cfg", "not a dict det reads; [tta] keeps its "
                                                     "defaults"))
        return None
    for key in sorted(set(cfg) - set(TTA_CFG_KEYS)):
        out.append(Untranslated(f"tta_model.tta_cfg.{key}", f"[tta] has {', '.join(TTA_CFG_KEYS)}"
                                                            " only"))
    tta = {key: cfg[key] for key in TTA_CFG_KEYS if key in cfg}
    return tta or None


def _same_but_scale(steps: list[dict]) -> bool:
    rest = [{k: v for k, v in s.items() if k != "scale"} for s in steps]
    return all("scale" in s for s in steps) and all(r == rest[0] for r in rest)


def _views(options: list, where: str, out: list[Untranslated]) -> dict | None:
    """What TestTimeAug's ``options`` (its ``transforms`` lists) vary: {"scales", "flip",
    "directions", "steps"}, ``steps`` the MMDetection pipeline of the first view (first
    scale, no flip); None, with the reason in ``out``, when det cannot make those views."""
    found: dict[str, Any] = {"scales": None, "flip": False, "directions": [], "steps": []}
    for index, option in enumerate(options):
        here = f"{where}[{index}]"
        if not isinstance(option, (list, tuple)) or not option or not all(
                isinstance(s, dict) for s in option):
            out.append(Untranslated(here, "not a list of transforms det reads"))
            return None
        kinds = {s.get("type") for s in option}
        if kinds == {"Resize"} and found["scales"] is None:
            if not _same_but_scale(list(option)):
                out.append(Untranslated(here, "Resize steps that differ in more than scale (or "
                                              "have none): det's MultiScaleFlipAug varies "
                                              "img_scale only"))
                return None
            found["scales"] = [s["scale"] for s in option]
            found["resize_at"] = index
            found["steps"].append(dict(option[0]))
        elif kinds == {"RandomFlip"} and "flip_at" not in found:
            probs = [s.get("prob") for s in option]
            if found.get("resize_at") != index - 1:
                out.append(Untranslated(here, "RandomFlip not right after the Resize steps: det "
                                              "flips each view right after resizing it"))
                return None
            if not all(p in (0, 1) for p in probs) or probs.count(0) != 1:
                out.append(Untranslated(here, f"RandomFlip probs {probs}: det's views are one "
                                              "unflipped and one per flip direction (prob 1)"))
                return None
            found["flip"] = 1 in probs
            found["directions"] = [s.get("direction", "horizontal") for s in option
                                   if s.get("prob") == 1]
            found["flip_at"] = index
        elif len(option) == 1:
            found["steps"].append(dict(option[0]))
        else:
            out.append(Untranslated(here, f"a choice of {len(option)} transforms "
                                          f"({', '.join(sorted(map(str, kinds)))}): det's "
                                          "MultiScaleFlipAug varies the scale and the flip only"))
            return None
    if found["scales"] is None:
        out.append(Untranslated(where, "no list of Resize steps: det's MultiScaleFlipAug needs "
                                       "the scales"))
        return None
    return found


def _first_difference(ours: list, theirs: list) -> str:
    """The first step of ``ours`` that is not ``theirs``'s, in words (inside a
    MultiScaleFlipAug both end in: its scale, then its transforms)."""
    last = ours[-1] if ours else {}
    if ours[:-1] == theirs[:-1] and theirs and last.get("type") == theirs[-1].get("type") \
            == "MultiScaleFlipAug":
        if last.get("img_scale") != theirs[-1].get("img_scale"):
            return (f"its first scale {last.get('img_scale')} is not "
                    f"{theirs[-1].get('img_scale')}")
        ours, theirs = last.get("transforms", []), theirs[-1].get("transforms", [])
    for index in range(max(len(ours), len(theirs))):
        mine = ours[index] if index < len(ours) else None
        other = theirs[index] if index < len(theirs) else None
        if mine != other:
            return f"its step {index} is {mine} where test_pipeline's is {other}"
    return "they differ"


def translate_tta_pipeline(values: dict, test_pipeline: list | None, preprocessor: dict,
                           out: list[Untranslated]) -> list[dict] | None:
    """det's test pipeline for the config's ``tta_pipeline`` (module docstring), given the
    translated ``test_pipeline`` (None: it did not translate); None, with the reason in
    ``out``, when it does not translate or would change ``det test`` without ``--tta``."""
    steps = values.get("tta_pipeline")
    if steps is None:
        return None
    where = "tta_pipeline"
    if not isinstance(steps, (list, tuple)) or not steps or not isinstance(steps[-1], dict) \
            or steps[-1].get("type") != "TestTimeAug":
        out.append(Untranslated(where, "not a list of transforms ending in TestTimeAug"))
        return None
    options = steps[-1].get("transforms")
    views = _views(list(options) if isinstance(options, (list, tuple)) else [None],
                   f"{where}[{len(steps) - 1}].transforms", out)
    if views is None:
        return None
    if test_pipeline is None:
        out.append(Untranslated(where, "test_pipeline does not translate, so det cannot check "
                                       "that its views start with the test pipeline's; the "
                                       "preset's test pipeline is kept"))
        return None
    plain = lists_for_tuples(test_pipeline)
    aug = plain[-1] if plain and isinstance(plain[-1], dict) else {}
    scales = lists_for_tuples(views["scales"])
    if aug.get("img_scale") in scales:  # the plain run's view first, the set of views the same
        scales.remove(aug["img_scale"])
        scales.insert(0, aug["img_scale"])
    first_resize = {**views["steps"][0], "scale": tuple(scales[0])}
    # the first view as a plain test pipeline, translated as test_pipeline is
    first = translate_pipeline([dict(s) for s in steps[:-1]] + [first_resize]
                               + views["steps"][1:], where, preprocessor, test=True, out=out)
    if first is None:
        return None
    first = lists_for_tuples(first)
    if first != plain:
        out.append(Untranslated(where, "det test runs data.test.pipeline's first view without "
                                       "--tta and all its views with --tta, and this "
                                       "tta_pipeline's first view (first scale, unflipped) is "
                                       f"not test_pipeline: {_first_difference(first, plain)}; "
                                       "the test pipeline is kept"))
        return None
    directions = views["directions"]
    first[-1].update(img_scale=scales, flip=views["flip"])
    if directions:
        first[-1]["flip_direction"] = directions[0] if len(directions) == 1 else directions
    return first
