"""Test-time augmentation of masks (MMDetection 2.x's ``aug_test_mask``): the merged boxes are
segmented in every view, the probabilities un-flipped and averaged, then pasted; by hand on a
two-view detector, and exactly plain ``predict`` for one unflipped view of a tiny Mask R-CNN
and a tiny Cascade Mask R-CNN."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from detcli.config.loader import load_config
from detcli.engine.tta import map_into, merge_views, merged_mask_probs, unflip_masks
from detcli.models.build import build_detector
from detcli.models.detectors.single_stage import TrunkDetector
from detcli.models.protocols import DetectorStages
from detcli.models.roi_heads.mask_paste import paste_masks
from detcli.structures.batch import ImageBatch
from detcli.structures.dense import Candidates, detections_as_candidates
from detcli.structures.detections import DetectionBatch
from detcli.task.two_stage_cfg import RCNNMaskTestConfig


def view(h: int, w: int, factor: float, flip: str | None, ori=(100, 100)) -> ImageBatch:
    """One image's view: network input (h, w), scaled by ``factor``, flipped in ``flip``."""
    return ImageBatch(tensor=torch.zeros(1, 3, h, w), img_shapes=[(h, w)], ori_shapes=[ori],
                      scale_factors=torch.full((1, 4), factor),
                      metas=[{"flip": flip is not None, "flip_direction": flip}])


def test_unflip_masks_by_hand():
    probs = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]).expand(4, 1, 2, 2)  # (N=4, M=1, 2, 2)
    out = unflip_masks(probs, [None, "horizontal", "vertical", "diagonal"])
    assert out[:, 0].tolist() == [
        [[1, 2], [3, 4]],  # not flipped
        [[2, 1], [4, 3]],  # columns reversed
        [[3, 4], [1, 2]],  # rows reversed
        [[4, 3], [2, 1]],  # both
    ]


def test_map_into_is_map_backs_inverse_by_hand():
    # the 100 x 100 original at scale 2, flipped horizontally in its 200 x 200 view
    boxes = torch.tensor([[[12.0, 10.0, 52.0, 50.0]]])
    out = map_into(boxes, view(200, 200, 2.0, "horizontal"))
    assert out[0].tolist() == [[96, 20, 176, 100]]  # (24, 20, 104, 100), x -> 200 - x


class ListTrunk(nn.Module):
    def forward(self, images: Tensor) -> list[Tensor]:
        return [images]


class EdgeMaskRoIHead(nn.Module):
    """Segments a box (x1, y1, x2, y2) of the view as the 1 x 2 mask [x1 / 200, x2 / 200] and
    records the boxes it was given."""

    with_mask = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[list[float]]] = []
        self.test_cfg = RCNNMaskTestConfig(mask_thr_binary=0.4)

    def predict_mask_probs(self, feats, dets: DetectionBatch, **extract_kwargs) -> Tensor:
        self.seen.append(dets.boxes[0, :int(dets.num_dets[0])].tolist())
        x1, x2 = dets.boxes[..., 0], dets.boxes[..., 2]  # (N, M)
        return torch.stack([x1, x2], dim=-1)[..., None, :] / 200  # (N, M, 1, 2)


class TwoViewMaskDetector(TrunkDetector):
    """Gives each view's fixed detections (chosen by its flip) and segments with
    :class:`EdgeMaskRoIHead`."""

    num_classes_key = "model.roi_head.bbox_head.num_classes"

    def __init__(self, per_flip: dict) -> None:
        super().__init__()
        self.backbone, self.neck = ListTrunk(), None
        self.roi_head = EdgeMaskRoIHead()
        self.per_flip = per_flip

    @property
    def detection_test_cfg(self) -> RCNNMaskTestConfig:
        return self.roi_head.test_cfg

    @property
    def stages(self) -> DetectorStages:
        return DetectorStages(dense_head=None, dense_key="model.rpn_head", roi_head=self.roi_head)

    def candidates(self, images: ImageBatch) -> Candidates:
        rows = self.per_flip[images.metas[0]["flip_direction"]]
        return detections_as_candidates(DetectionBatch(
            boxes=torch.tensor([[r[0] for r in rows]]), scores=torch.tensor([[r[1] for r in rows]]),
            labels=torch.tensor([[r[2] for r in rows]]), num_dets=torch.tensor([len(rows)])))


def test_two_views_masks_are_unflipped_and_averaged_by_hand():
    per_flip = {
        None: [([10.0, 10, 50, 50], 0.6, 0)],
        "horizontal": [([96.0, 20, 176, 100], 0.8, 0)],  # -> [12, 10, 52, 50]: wins the NMS
    }
    views = [view(100, 100, 1.0, None), view(200, 200, 2.0, "horizontal")]
    model = TwoViewMaskDetector(per_flip)
    merged = merge_views(model, views)[0]
    assert merged.boxes.tolist() == [[12, 10, 52, 50]]
    # the merged box, mapped into each view: as it is in view 0; x 2, then x -> 200 - x in view 1
    assert model.roi_head.seen == [[[12, 10, 52, 50]], [[96, 20, 176, 100]]]

    dets = DetectionBatch(boxes=merged.boxes[None], scores=merged.scores[None],
                          labels=merged.labels[None], num_dets=torch.tensor([1]))
    probs = merged_mask_probs(model, model.roi_head, views, dets)  # (1, 1, 1, 2)
    # view 0: [12, 52] / 200 = [0.06, 0.26]; view 1: [96, 176] / 200 = [0.48, 0.88], un-flipped
    # [0.88, 0.48]; the mean: [0.47, 0.37]
    torch.testing.assert_close(probs[0, 0], torch.tensor([[0.47, 0.37]]))

    assert merged.masks is not None and merged.masks.shape == (1, 100, 100)
    expected = paste_masks(torch.tensor([[[0.47, 0.37]]]), torch.tensor([[12.0, 10, 52, 50]]),
                           (100, 100), threshold=0.4)
    assert torch.equal(merged.masks, expected)
    # the left cell (0.47) passes 0.4 near its centre (x = 22), the right one (0.37) nowhere
    assert merged.masks[0, 30, 22] and not merged.masks[0, 30, 45]
    assert not merged.masks[0, :10].any() and not merged.masks[0, :, 52:].any()


def tiny(preset: str) -> nn.Module:
    """The preset's model, untrained, keeping 20 detections of 50 proposals (fast)."""
    torch.manual_seed(0)
    small = ["model.test_cfg.rcnn.max_per_img=20", "model.test_cfg.rpn.max_per_img=50"]
    return build_detector(load_config(preset, small).cfg.model).eval()


@pytest.mark.parametrize("preset", ["mask_rcnn_tiny_synth", "cascade_mask_rcnn_tiny_synth"])
def test_one_unflipped_view_gives_plain_predicts_masks_exactly(preset):
    model = tiny(preset)
    images = ImageBatch.from_tensor(
        torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(1)))
    images.scale_factors = torch.tensor([[2.0] * 4, [0.5] * 4])  # exact in binary
    images.ori_shapes = [(16, 32), (64, 128)]
    with torch.inference_mode():
        plain = model.predict(images)
        merged = merge_views(model, [images])
    assert [len(d) for d in plain] == [20, 20]
    for p, m in zip(plain, merged):
        assert p.masks is not None and m.masks is not None
        assert m.masks.shape == p.masks.shape
        assert p.masks.any()
        torch.testing.assert_close(m.boxes, p.boxes, rtol=0, atol=0)
        torch.testing.assert_close(m.scores, p.scores, rtol=0, atol=0)
        assert torch.equal(m.labels, p.labels)
        assert torch.equal(m.masks, p.masks)
