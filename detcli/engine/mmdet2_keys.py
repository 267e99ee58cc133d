"""MMDetection 2.x-era state-dict keys -> det's (MMDetection 3.x's), for the families det has.

Most 2.x checkpoints load into MMDetection 3.x -- and det -- as they are (RetinaNet, FCOS,
ATSS, Faster / Mask / Cascade R-CNN: MMDetection's 3.x model zoo still serves the 2.x files).
What changed, and is renamed here:

* DETR and Deformable DETR (MMDetection 3.0 rewrote them). 2.x kept the transformer inside
  the head, as mmcv 1.x's ``BaseTransformerLayer``: ``bbox_head.transformer.encoder.layers.N``
  with ``attentions.0`` / ``ffns.0`` / ``norms.K``, the decoder's ``attentions.0`` (self) and
  ``attentions.1`` (cross). 3.x has ``encoder.layers.N.self_attn`` / ``ffn`` / ``norms.K`` and
  ``decoder.layers.N.self_attn`` / ``cross_attn`` at the detector's top level; DETR's 1x1
  ``bbox_head.input_proj`` became the ``ChannelMapper`` neck's ``neck.convs.0.conv``; the
  queries ``bbox_head.query_embedding`` became ``query_embedding``; Deformable DETR's
  ``level_embeds``, ``reference_points``, ``enc_output(_norm)`` and ``pos_trans`` became
  ``level_embed``, ``reference_points_fc``, ``memory_trans_fc`` / ``_norm`` and
  ``pos_trans_fc``. The class and box branches (``bbox_head.fc_cls``, ``reg_ffn``,
  ``fc_reg``, ``cls_branches``, ``reg_branches``) kept their names.
* FCOS's first predictors, ``bbox_head.fcos_cls`` / ``fcos_reg`` / ``fcos_centerness``
  (``conv_cls`` / ``conv_reg`` / ``conv_centerness`` since; MMDetection 3.3's
  ``AnchorFreeHead._load_from_state_dict`` still renames them).

A file is read as 2.x's when it holds a key of those layouts (``bbox_head.transformer.`` or
``bbox_head.fcos_``); then every such key must map, and one that does not is a CheckpointError
naming it (rather than a model silently missing its transformer). The class-order changes of
MMDetection 1.x (``tools/model_converters/upgrade_model_version.py``: background first) are
not key renames and are not handled: such a file is older than the 2.x zoo.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping

from torch import Tensor

from detcli.errors import CheckpointError

log = logging.getLogger(__name__)

TRANSFORMER = "bbox_head.transformer."
# (2.x pattern, 3.x replacement), tried in order on keys under TRANSFORMER (prefix removed)
TRANSFORMER_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement) for pattern, replacement in (
        (r"^encoder\.layers\.(\d+)\.attentions\.0\.", r"encoder.layers.\1.self_attn."),
        (r"^encoder\.layers\.(\d+)\.ffns\.0\.", r"encoder.layers.\1.ffn."),
        (r"^encoder\.layers\.(\d+)\.norms\.(\d+)\.", r"encoder.layers.\1.norms.\2."),
        (r"^decoder\.layers\.(\d+)\.attentions\.0\.", r"decoder.layers.\1.self_attn."),
        (r"^decoder\.layers\.(\d+)\.attentions\.1\.", r"decoder.layers.\1.cross_attn."),
        (r"^decoder\.layers\.(\d+)\.ffns\.0\.", r"decoder.layers.\1.ffn."),
        (r"^decoder\.layers\.(\d+)\.norms\.(\d+)\.", r"decoder.layers.\1.norms.\2."),
        (r"^decoder\.post_norm\.", "decoder.post_norm."),
        (r"^level_embeds$", "level_embed"),
        (r"^reference_points\.", "reference_points_fc."),
        (r"^enc_output\.", "memory_trans_fc."),
        (r"^enc_output_norm\.", "memory_trans_norm."),
        (r"^pos_trans\.", "pos_trans_fc."),
        (r"^pos_trans_norm\.", "pos_trans_norm."),
    ))
HEAD_RENAMES = {  # 2.x key prefix -> 3.x, outside the transformer
    "bbox_head.input_proj.": "neck.convs.0.conv.",  # DETR's projection -> its ChannelMapper
    "bbox_head.query_embedding.": "query_embedding.",
    "bbox_head.fcos_cls.": "bbox_head.conv_cls.",
    "bbox_head.fcos_reg.": "bbox_head.conv_reg.",
    "bbox_head.fcos_centerness.": "bbox_head.conv_centerness.",
}


def is_mmdet2_layout(state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` holds a key of a 2.x layout this module renames."""
    return any(key.startswith((TRANSFORMER, "bbox_head.fcos_")) for key in state)


def _renamed(key: str) -> str | None:
    """The 3.x name of 2.x ``key``; ``key`` when it did not change; None when it cannot map."""
    if key.startswith(TRANSFORMER):
        rest = key[len(TRANSFORMER):]
        for pattern, replacement in TRANSFORMER_RULES:
            if pattern.search(rest):
                return pattern.sub(replacement, rest, count=1)
        return None
    for old, new in HEAD_RENAMES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def upgrade_mmdet2_keys(state: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """``state`` with MMDetection 2.x's key names (module docstring) renamed to 3.x's; as it is
    when it holds none. A 2.x key that does not map is a CheckpointError naming it."""
    if not is_mmdet2_layout(state):
        return dict(state)
    renamed = {key: _renamed(key) for key in state}
    unmapped = [key for key, new in renamed.items() if new is None]
    if unmapped:
        raise CheckpointError(
            f"checkpoint {source} has MMDetection 2.x's transformer layout, but "
            f"{len(unmapped)} of its keys have no MMDetection 3.x name det knows: "
            + ", ".join(unmapped[:8]) + (", ..." if len(unmapped) > 8 else ""),
            hint="det maps 2.x DETR / Deformable DETR keys (attentions.0/1, ffns.0, norms, "
                 "level_embeds, reference_points, enc_output, pos_trans, input_proj, "
                 "query_embedding); convert the rest with MMDetection 3.x first")
    collided = [new for new, count in Counter(renamed.values()).items() if count > 1]
    if collided:
        raise CheckpointError(f"checkpoint {source} holds both the MMDetection 2.x and 3.x "
                              f"names of {', '.join(sorted(collided)[:4])}",
                              hint="the file mixes two layouts; load one of them")
    changed = sum(key != new for key, new in renamed.items())
    log.info("checkpoint %s: %d keys renamed from MMDetection 2.x's layout to 3.x's", source,
             changed)
    return {renamed[key]: value for key, value in state.items()}
