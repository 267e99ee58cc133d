"""Test-time augmentation of query detectors (DETR, Deformable DETR, DINO), whose test_cfg has
no NMS: the merge uses ``[tta]`` (MMDetection 3.3's ``tta_model.tta_cfg``: nms iou 0.5,
max_per_img 100 by default); ``tta.nms = false`` keeps the best of all views without NMS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detcli.config.loader import load_config
from detcli.config.root import DetConfig
from detcli.engine.tta import TTAConfig, merge_note, merge_settings, merge_views
from detcli.models.build import build_detector
from detcli.models.protocols import DetectorStages
from detcli.models.query_heads.detr_head import DETRTestConfig
from detcli.ops.boxes import box_iou
from detcli.structures.batch import ImageBatch
from detcli.structures.dense import Candidates
from detcli.task.postprocess import DenseTestConfig, NMSConfig

QUERY_PRESETS = ["detr_tiny_synth", "deformable_detr_tiny_synth", "dino_tiny_synth"]


def view(h: int, w: int, factor: float, flip: str | None, ori=(100, 100)) -> ImageBatch:
    """One image's view: network input (h, w), scaled by ``factor``, flipped in ``flip``."""
    return ImageBatch(tensor=torch.zeros(1, 3, h, w), img_shapes=[(h, w)], ori_shapes=[ori],
                      scale_factors=torch.full((1, 4), factor),
                      metas=[{"flip": flip is not None, "flip_direction": flip}])


class TopKDetector(nn.Module):
    """A query detector's shape: fixed top-k detections per view (chosen by its flip), every
    one valid, and a test_cfg with ``max_per_img`` only."""

    def __init__(self, per_flip: dict, max_per_img: int = 100) -> None:
        super().__init__()
        self.per_flip = per_flip
        self.test_cfg = DETRTestConfig(max_per_img=max_per_img)

    @property
    def detection_test_cfg(self) -> DETRTestConfig:
        return self.test_cfg

    @property
    def stages(self) -> DetectorStages:
        return DetectorStages(dense_head=None, dense_key="model.bbox_head")

    def candidates(self, images: ImageBatch) -> Candidates:
        rows = self.per_flip[images.metas[0]["flip_direction"]]
        scores = torch.tensor([[r[1] for r in rows]])
        return Candidates(torch.tensor([[r[0] for r in rows]]), scores,
                          torch.tensor([[r[2] for r in rows]]), torch.ones_like(scores, dtype=torch.bool))


PER_FLIP = {
    None: [([10.0, 10, 50, 50], 0.6, 0),  # A0
           ([60.0, 60, 90, 90], 0.3, 1)],  # B0
    "horizontal": [([96.0, 20, 176, 100], 0.8, 0),  # A1 -> [12, 10, 52, 50]: IoU 0.905 with A0
                   ([20.0, 120, 80, 180], 0.4, 1)],  # B1 -> [60, 60, 90, 90]: B0 exactly
}
VIEWS = [view(100, 100, 1.0, None), view(200, 200, 2.0, "horizontal")]


def test_a_flipped_view_merges_with_mmdetections_nms_by_hand():
    merged = merge_views(TopKDetector(PER_FLIP), VIEWS)[0]
    # iou 0.5 per class: A1 beats A0, B1 beats B0 (the same box, scored 0.4 > 0.3)
    assert merged.boxes.tolist() == [[12, 10, 52, 50], [60, 60, 90, 90]]
    assert merged.scores.tolist() == pytest.approx([0.8, 0.4])
    assert merged.labels.tolist() == [0, 1]


def test_without_nms_the_best_of_all_views_are_kept_by_hand():
    merged = merge_views(TopKDetector(PER_FLIP), VIEWS, TTAConfig(nms=False))[0]
    assert merged.boxes.tolist() == [[12, 10, 52, 50], [10, 10, 50, 50], [60, 60, 90, 90],
                                     [60, 60, 90, 90]]
    assert merged.scores.tolist() == pytest.approx([0.8, 0.6, 0.4, 0.3])
    assert merged.labels.tolist() == [0, 0, 1, 1]
    capped = merge_views(TopKDetector(PER_FLIP), VIEWS, TTAConfig(nms=False, max_per_img=3))[0]
    assert capped.scores.tolist() == pytest.approx([0.8, 0.6, 0.4])
    tight = TTAConfig(nms={"type": "nms", "iou_threshold": 0.95})  # A0, A1 overlap by 0.905
    assert len(merge_views(TopKDetector(PER_FLIP), VIEWS, tight)[0]) == 3


def test_the_settings_resolve_against_the_models_test_cfg():
    query = merge_settings(TopKDetector(PER_FLIP, max_per_img=7))
    assert query.nms == NMSConfig(iou_threshold=0.5) and query.max_per_img == 7
    assert "tta.nms = {type = \"nms\", iou_threshold = 0.5}" in merge_note(TopKDetector(PER_FLIP))
    assert merge_note(TopKDetector(PER_FLIP), TTAConfig(nms=False)) is None

    class Dense(TopKDetector):
        test_cfg_dense = DenseTestConfig(nms={"type": "nms", "iou_threshold": 0.6},
                                         max_per_img=50, min_bbox_size=2)

        @property
        def detection_test_cfg(self) -> DenseTestConfig:
            return self.test_cfg_dense

    dense = merge_settings(Dense(PER_FLIP))  # the model's own NMS and cap
    assert (dense.nms.iou_threshold, dense.max_per_img, dense.min_bbox_size) == (0.6, 50, 2)
    assert merge_note(Dense(PER_FLIP)) is None
    assert merge_settings(Dense(PER_FLIP), TTAConfig(max_per_img=5)).max_per_img == 5


def test_the_config_key_reads_from_toml():
    cfg = load_config("detr_tiny_synth", ["tta.nms=false", "tta.max_per_img=30"]).cfg
    assert isinstance(cfg, DetConfig)
    assert cfg.tta.nms is None and cfg.tta.max_per_img == 30
    assert load_config("detr_tiny_synth", []).cfg.tta == TTAConfig()


@pytest.mark.parametrize("preset", QUERY_PRESETS)
def test_one_unflipped_view_without_nms_is_plain_predict(preset):
    torch.manual_seed(0)
    model = build_detector(load_config(preset, []).cfg.model).eval()
    images = ImageBatch.from_tensor(
        torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)))
    images.scale_factors = torch.tensor([[2.0] * 4, [0.5] * 4])
    with torch.inference_mode():
        plain = model.predict(images)
        merged = merge_views(model, [images], TTAConfig(nms=False))
        with_nms = merge_views(model, [images])
    for p, m, n in zip(plain, merged, with_nms):
        assert len(p) == len(m) > 0
        torch.testing.assert_close(m.boxes, p.boxes, rtol=0, atol=0)
        torch.testing.assert_close(m.scores, p.scores, rtol=0, atol=0)
        assert torch.equal(m.labels, p.labels)
        # the default merge is MMDetection's NMS (iou 0.5, per class) over the same boxes
        assert len(n) <= len(p)
        same = n.labels[:, None] == n.labels[None, :]
        iou = box_iou(n.boxes, n.boxes).fill_diagonal_(0)
        assert not (same & (iou > 0.5)).any()
