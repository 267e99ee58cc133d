"""Test-time augmentation: un-flip and rescale by hand, the merge-then-NMS semantics, the data
layer's own transforms undone view by view, and turning TTA on in a config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detcli.config.loader import load_config
from detcli.data.collate import collate_views
from detcli.data.datasets import CocoDataset
from detcli.data.synth import make_synthetic_dataset
from detcli.data.transforms.geometric import flip_boxes
from detcli.engine.tta import enable_tta, map_back, merge_views, num_views, unflip_boxes
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.models.protocols import DetectorStages
from detcli.structures.batch import ImageBatch
from detcli.structures.dense import Candidates, detections_as_candidates
from detcli.structures.detections import DetectionBatch
from detcli.task.postprocess import DenseTestConfig

ROOT = Path(__file__).resolve().parents[2]
TINY_SYNTH = ROOT / "presets" / "retinanet_tiny_synth.toml"
TINY_MODEL = {
    "type": "RetinaNet",
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 8, "init_cfg": False},
    "neck": {"type": "FPN", "out_channels": 16, "start_level": 1, "add_extra_convs": "on_input",
             "num_outs": 5},
    "bbox_head": {"type": "RetinaHead", "num_classes": 3, "feat_channels": 16, "stacked_convs": 1},
}


def view(h: int, w: int, factor: float, flip: str | None, ori=(100, 100)) -> ImageBatch:
    """One image's view: network input (h, w), scaled by ``factor``, flipped in ``flip``."""
    return ImageBatch(tensor=torch.zeros(1, 3, h, w), img_shapes=[(h, w)], ori_shapes=[ori],
                      scale_factors=torch.full((1, 4), factor),
                      metas=[{"flip": flip is not None, "flip_direction": flip}])


def test_unflip_boxes_by_hand():
    box = [10.0, 5.0, 30.0, 25.0]
    boxes = torch.tensor([box] * 4)[:, None, :]  # (4, 1, 4): one box in each of 4 images
    shapes = torch.tensor([[50, 100], [50, 100], [60, 80], [60, 80]])  # (h, w)
    out = unflip_boxes(boxes, shapes, [None, "horizontal", "vertical", "diagonal"])
    assert out[:, 0].tolist() == [
        [10, 5, 30, 25],  # not flipped
        [70, 5, 90, 25],  # x -> 100 - x
        [10, 35, 30, 55],  # y -> 60 - y
        [50, 35, 70, 55],  # both, in an 80 x 60 image
    ]


@pytest.mark.parametrize("direction", ["horizontal", "vertical", "diagonal"])
def test_unflip_undoes_the_pipelines_flip(direction):
    boxes = np.array([[3.5, 7, 20, 31], [0, 0, 64, 48]], dtype=np.float32)
    flipped = flip_boxes(boxes, (48, 64), direction)  # what RandomFlip does to GT
    back = unflip_boxes(torch.from_numpy(flipped)[None], torch.tensor([[48, 64]]), [direction])
    np.testing.assert_array_equal(back[0].numpy(), boxes)


def test_map_back_unflips_in_the_view_then_divides_by_its_scale():
    # view: the 100 x 100 original at scale 2, flipped horizontally in its 200 x 200 image
    boxes = torch.tensor([[[96.0, 20.0, 176.0, 100.0]]])
    out = map_back(boxes, view(200, 200, 2.0, "horizontal"))
    assert out[0].tolist() == [[12, 10, 52, 50]]  # (200 - 176, 20, 200 - 96, 100) / 2


class FakeHead(nn.Module):
    """Not a dense head: TTA merges the detector's post-NMS detections."""

    def __init__(self, test_cfg: DenseTestConfig) -> None:
        super().__init__()
        self.test_cfg = test_cfg


class FakeDetector(nn.Module):
    """``predict_batch`` gives each view's fixed detections, chosen by the view's flip; its
    ``candidates`` are those detections, as a two-stage detector's are."""

    def __init__(self, per_flip: dict, test_cfg: DenseTestConfig) -> None:
        super().__init__()
        self.bbox_head = FakeHead(test_cfg)
        self.per_flip = per_flip

    def predict_batch(self, images: ImageBatch, rescale: bool = True) -> DetectionBatch:
        assert not rescale  # TTA maps boxes back itself
        rows = self.per_flip[images.metas[0]["flip_direction"]]
        return DetectionBatch(boxes=torch.tensor([[r[0] for r in rows]]),
                              scores=torch.tensor([[r[1] for r in rows]]),
                              labels=torch.tensor([[r[2] for r in rows]]),
                              num_dets=torch.tensor([len(rows)]))

    @property
    def detection_test_cfg(self) -> DenseTestConfig:
        return self.bbox_head.test_cfg

    @property
    def stages(self) -> DetectorStages:
        return DetectorStages(dense_head=None, dense_key="model.bbox_head")  # no mask branch

    def candidates(self, images: ImageBatch) -> Candidates:
        return detections_as_candidates(self.predict_batch(images, rescale=False))


def test_merge_concatenates_views_then_runs_class_aware_nms():
    per_flip = {
        None: [([10.0, 10, 50, 50], 0.6, 0),  # A0
               ([10.0, 10, 50, 50], 0.5, 1)],  # same place, another class: kept
        "horizontal": [([96.0, 20, 176, 100], 0.8, 0),  # A1 -> [12, 10, 52, 50], IoU 0.905 with A0
                       ([0.0, 0, 20, 20], 0.7, 2)],  # -> [90, 0, 100, 10]
    }
    views = [view(100, 100, 1.0, None), view(200, 200, 2.0, "horizontal")]
    merged = merge_views(FakeDetector(per_flip, DenseTestConfig()), views)[0]
    assert merged.boxes.tolist() == [[12, 10, 52, 50], [90, 0, 100, 10], [10, 10, 50, 50]]
    assert merged.scores.tolist() == pytest.approx([0.8, 0.7, 0.5])
    assert merged.labels.tolist() == [0, 2, 1]  # A0 lost to A1 from the flipped view
    capped = merge_views(FakeDetector(per_flip, DenseTestConfig(max_per_img=2)), views)[0]
    assert capped.labels.tolist() == [0, 2]


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = build_detector(TINY_MODEL).eval()
    nn.init.zeros_(model.bbox_head.retina_cls.bias)  # scores near 0.5: plenty of detections
    return model


def test_one_unflipped_view_merges_to_the_plain_prediction():
    model = tiny_model()
    images = ImageBatch.from_tensor(torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)))
    images.scale_factors = torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.5, 0.5, 0.5, 0.5]])
    with torch.inference_mode():
        plain = model.predict(images)
        merged = merge_views(model, [images])
    assert [len(d) for d in plain] == [100, 100]
    for p, m in zip(plain, merged):
        torch.testing.assert_close(m.boxes, p.boxes)
        torch.testing.assert_close(m.scores, p.scores)
        assert torch.equal(m.labels, p.labels)


def test_one_unflipped_view_keeps_atss_centerness_like_the_plain_prediction():
    torch.manual_seed(0)
    atss = dict(TINY_MODEL, type="ATSS", bbox_head={
        "type": "ATSSHead", "num_classes": 3, "feat_channels": 16, "stacked_convs": 1,
        "norm_cfg": {"type": "GN", "num_groups": 4}})
    model = build_detector(atss).eval()
    nn.init.zeros_(model.bbox_head.atss_cls.bias)  # scores near 0.5: plenty of detections
    nn.init.constant_(model.bbox_head.atss_centerness.bias, -1.0)  # centerness far from 1
    images = ImageBatch.from_tensor(torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2)))
    with torch.inference_mode():
        plain = model.predict(images)[0]
        merged = merge_views(model, [images])[0]
    assert len(plain) > 0
    assert plain.scores.max() < 0.5  # the centerness factor is in the plain scores
    torch.testing.assert_close(merged.scores, plain.scores)
    torch.testing.assert_close(merged.boxes, plain.boxes)


def tta_dataset(tmp_path) -> CocoDataset:
    synth = make_synthetic_dataset(tmp_path / "s", num_train=0, num_val=2, image_size=64, seed=3)
    inner = [
        {"type": "Resize", "keep_ratio": True},
        {"type": "RandomFlip"},
        {"type": "Pad", "size_divisor": 32},
        {"type": "DefaultFormatBundle"},
        {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]},
    ]
    pipeline = [
        {"type": "LoadImageFromFile"}, {"type": "LoadAnnotations"},
        {"type": "MultiScaleFlipAug", "img_scale": [[96, 96], [150, 120]], "flip": True,
         "flip_direction": ["horizontal", "vertical", "diagonal"], "transforms": inner},
    ]
    return CocoDataset(ann_file=str(synth.ann_file("val")), img_prefix=str(synth.img_prefix("val")),
                       pipeline=pipeline, test_mode=True)


def test_every_view_of_the_real_pipeline_maps_back_to_the_original_gt(tmp_path):
    dataset = tta_dataset(tmp_path)
    for i in range(len(dataset)):
        gt = torch.from_numpy(dataset.get_ann_info(i)["bboxes"])  # (G, 4) original pixels
        sample = dataset[i]
        assert len(sample["views"]) == 8  # 2 scales x (unflipped + 3 directions)
        views = collate_views([sample])
        for v, images in zip(sample["views"], views):
            in_view = v["gt_bboxes"][None].float()  # (1, G, 4): GT moved by Resize and RandomFlip
            torch.testing.assert_close(map_back(in_view, images)[0], gt, atol=1e-4, rtol=0)

        # merging the 8 views' copies of the GT (each scored by its view) gives the GT once
        per_view = {id(b): v["gt_bboxes"] for b, v in zip(views, sample["views"])}
        model = _GTDetector(per_view)
        merged = merge_views(model, views)[0]
        order = torch.argsort(merged.boxes[:, 0] * 1000 + merged.boxes[:, 1])
        expected = gt[torch.argsort(gt[:, 0] * 1000 + gt[:, 1])]
        torch.testing.assert_close(merged.boxes[order], expected, atol=1e-4, rtol=0)


class _GTDetector(nn.Module):
    """Detects exactly the GT boxes the pipeline put in each view (score: the view's number)."""

    def __init__(self, per_view: dict) -> None:
        super().__init__()
        self.bbox_head = FakeHead(DenseTestConfig())
        self.per_view = per_view
        self.calls = 0

    def predict_batch(self, images: ImageBatch, rescale: bool = True) -> DetectionBatch:
        boxes = self.per_view[id(images)].float()  # (G, 4)
        self.calls += 1
        g = boxes.shape[0]
        return DetectionBatch(boxes=boxes[None], scores=torch.full((1, g), 0.1 * self.calls),
                              labels=torch.zeros(1, g, dtype=torch.long), num_dets=torch.tensor([g]))

    @property
    def detection_test_cfg(self) -> DenseTestConfig:
        return self.bbox_head.test_cfg

    @property
    def stages(self) -> DetectorStages:
        return DetectorStages(dense_head=None, dense_key="model.bbox_head")  # no mask branch

    def candidates(self, images: ImageBatch) -> Candidates:
        return detections_as_candidates(self.predict_batch(images, rescale=False))


def test_enable_tta_adds_a_flip_to_a_single_view_pipeline_and_says_so():
    test_cfg = load_config(TINY_SYNTH).cfg.data.test
    assert num_views(test_cfg) == 1
    tta_cfg, note = enable_tta(test_cfg)
    assert num_views(tta_cfg) == 2
    assert "one scale and flip = false; --tta adds flip = true (horizontal)" in note
    assert test_cfg.pipeline[1].flip is False  # the original config is untouched
    again, note = enable_tta(tta_cfg)
    assert note is None and num_views(again) == 2


def test_enable_tta_needs_a_multiscaleflipaug_with_a_randomflip():
    test_cfg = load_config(TINY_SYNTH).cfg.data.test
    steps = list(test_cfg.pipeline)
    no_msfa = test_cfg.model_copy(update={"pipeline": steps[:1]})
    with pytest.raises(ConfigError, match="--tta needs a MultiScaleFlipAug step"):
        enable_tta(no_msfa)
    msfa = steps[1]
    no_flip_step = msfa.model_copy(update={"transforms": [t for t in msfa.transforms
                                                          if t.type != "RandomFlip"]})
    no_flip = test_cfg.model_copy(update={"pipeline": [steps[0], no_flip_step]})
    with pytest.raises(ConfigError, match="no RandomFlip in its transforms"):
        enable_tta(no_flip, where="data.val")
