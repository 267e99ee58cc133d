"""The tester: dataset order whatever the sampler's, eval and inference mode, gathering ranks,
checkpoints that do not fit, and ``evaluate`` end to end with a detector that returns the GT."""

from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader

from detcli.data.datasets import CocoDataset
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.engine.device import resolve_device
from detcli.engine.evaluation import evaluate
from detcli.engine.tester import (
    build_test_loader,
    collate_test,
    gather_by_index,
    load_test_checkpoint,
    run_inference,
)
from detcli.errors import CheckpointError, DetError
from detcli.evaluation.config import EvaluationConfig
from detcli.evaluation.evaluator import build_evaluator
from detcli.models.build import build_detector
from detcli.structures.detections import Detections

NORMALIZE = {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}
PLAIN = [{"type": "LoadImageFromFile"}, {"type": "Resize", "img_scale": [64, 64]},
         {"type": "RandomFlip", "flip_ratio": 0.0}, NORMALIZE,
         {"type": "Pad", "size_divisor": 32}, {"type": "ImageToTensor", "keys": ["img"]},
         {"type": "Collect", "keys": ["img"]}]
VIEWS = [{"type": "LoadImageFromFile"},
         {"type": "MultiScaleFlipAug", "img_scale": [64, 64], "flip": True,
          "transforms": [{"type": "Resize"}, {"type": "RandomFlip"}, NORMALIZE,
                         {"type": "Pad", "size_divisor": 32}, {"type": "ImageToTensor", "keys": ["img"]},
                         {"type": "Collect", "keys": ["img"]}]}]
TINY_MODEL = {
    "type": "RetinaNet",
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 8, "init_cfg": False},
    "neck": {"type": "FPN", "out_channels": 16, "start_level": 1, "add_extra_convs": "on_input",
             "num_outs": 5},
    "bbox_head": {"type": "RetinaHead", "num_classes": 3, "feat_channels": 16, "stacked_convs": 1},
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_train=0, num_val=5,
                                  image_size=64, seed=2, empty_ratio=0.4)


def dataset(synth, pipeline) -> CocoDataset:
    return CocoDataset(ann_file=str(synth.ann_file("val")), img_prefix=str(synth.img_prefix("val")),
                       pipeline=pipeline, test_mode=True)


class OracleDetector(nn.Module):
    """Predicts each image's GT (found by the ``image_id`` meta), score 0.9; records the modes
    it ran in."""

    def __init__(self, ds: CocoDataset) -> None:
        super().__init__()
        self.gt = {info["id"]: ds.get_ann_info(i) for i, info in enumerate(ds.img_infos)}
        self.seen: list[tuple[int, bool, bool]] = []  # (image id, inference mode, training)

    def predict(self, images, rescale: bool = True) -> list[Detections]:
        out = []
        for meta in images.metas:
            gt = self.gt[meta["image_id"]]
            self.seen.append((meta["image_id"], torch.is_inference_mode_enabled(), self.training))
            out.append(Detections(torch.from_numpy(gt["bboxes"]), torch.full((len(gt["labels"]),), 0.9),
                                  torch.from_numpy(gt["labels"])))
        return out


@pytest.mark.parametrize("pipeline", [PLAIN, VIEWS], ids=["plain", "multiscaleflipaug"])
def test_detections_come_back_in_dataset_order_whatever_the_sampler_order(synth, pipeline):
    ds = dataset(synth, pipeline)
    model = OracleDetector(ds).train()
    reverse = DataLoader(ds, batch_size=2, sampler=[4, 3, 2, 1, 0], collate_fn=collate_test)
    found = run_inference(model, reverse, "cpu")
    assert [image_id for image_id, _, _ in model.seen] == [5, 4, 3, 2, 1]
    assert all(inference and not training for _, inference, training in model.seen)
    assert model.training  # put back as it was
    for i, dets in enumerate(found):
        torch.testing.assert_close(dets.boxes, torch.from_numpy(ds.get_ann_info(i)["bboxes"]))


def test_evaluate_of_a_detector_returning_the_gt_is_perfect(synth):
    ds = dataset(synth, VIEWS)
    assert any(len(ds.get_ann_info(i)["bboxes"]) == 0 for i in range(len(ds)))  # an empty image
    evaluator = build_evaluator(EvaluationConfig(metric=["bbox", "voc"]), ds)
    evaluated = evaluate(OracleDetector(ds), build_test_loader(ds, samples_per_gpu=2), evaluator,
                         "cpu")
    metrics = evaluated.metrics
    assert len(evaluated.detections) == len(ds)
    assert metrics["bbox_mAP"] == 1.0 and metrics["bbox_AR@100"] == 1.0
    assert metrics["voc_mAP"] == 1.0 and metrics["voc_mAP_area"] == 1.0
    assert [c["class"] for c in metrics["per_class"]] == ["square", "circle", "triangle"]


def test_a_shuffling_loader_or_a_partial_one_is_refused(synth):
    ds = dataset(synth, PLAIN)
    model = OracleDetector(ds)
    with pytest.raises(DetError, match="must not shuffle"):
        run_inference(model, DataLoader(ds, batch_size=2, shuffle=True, collate_fn=collate_test), "cpu")
    partial = DataLoader(ds, batch_size=2, sampler=[0, 1, 2], collate_fn=collate_test)
    with pytest.raises(DetError, match=r"2 of 5 images got no detections entry \(first indices \[3, 4\]\)"):
        run_inference(model, partial, "cpu")


def _gather_worker(rank: int, world: int, init_file: str, out: dict) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP thread pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # a DistributedSampler's share of 5 images: rank 0 gets 0, 2, 4; rank 1 gets 1, 3, 0 (repeat)
        mine = {i: Detections(torch.full((1, 4), float(i)), torch.ones(1), torch.zeros(1, dtype=torch.long))
                for i in ([0, 2, 4] if rank == 0 else [1, 3, 0])}
        out[rank] = [float(d.boxes[0, 0]) for d in gather_by_index(mine, 5)]
    finally:
        dist.destroy_process_group()


def test_gather_by_index_merges_the_ranks_in_dataset_order(tmp_path):
    out = mp.Manager().dict()
    # fork, not spawn: the children need not import torch again (seconds each on 2 cores)
    mp.start_processes(_gather_worker, args=(2, str(tmp_path / "init"), out), nprocs=2,
                       join=True, start_method="fork")
    assert dict(out) == {0: [0.0, 1.0, 2.0, 3.0, 4.0], 1: [0.0, 1.0, 2.0, 3.0, 4.0]}


def test_checkpoint_of_another_class_count_is_refused_naming_both(tmp_path):
    trained = build_detector({**TINY_MODEL, "bbox_head": {**TINY_MODEL["bbox_head"], "num_classes": 2}})
    path = save_checkpoint(tmp_path / "two.pth", trained, meta={"classes": ["cat", "dog"]}, rng=False)
    model = build_detector(TINY_MODEL)
    with pytest.raises(CheckpointError) as err:
        load_test_checkpoint(model, path)
    message = str(err.value)
    assert "the checkpoint was trained on 2 classes (cat, dog), but the config has " \
           "model.bbox_head.num_classes = 3" in message
    assert "bbox_head.retina_cls.weight: shape [18, 16, 3, 3] in the checkpoint, [27, 16, 3, 3]" in message


def test_checkpoint_that_fits_loads_and_warns_about_renamed_classes(tmp_path, caplog):
    trained = build_detector(TINY_MODEL)
    path = save_checkpoint(tmp_path / "ok.pth", trained, meta={"classes": ["a", "b", "c"]}, rng=False)
    model = build_detector(TINY_MODEL)
    with caplog.at_level(logging.WARNING, logger="detcli"):
        report = load_test_checkpoint(model, path, class_names=("a", "b", "z"))
    assert report.exact and report.num_loaded == len(model.state_dict())
    assert "labels are matched by position" in caplog.text
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(None) == torch.device("cpu")
        with pytest.raises(DetError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(DetError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_collate_test_gives_view_batches(synth):
    plain = collate_test([dataset(synth, PLAIN)[0], dataset(synth, PLAIN)[1]])
    views = collate_test([dataset(synth, VIEWS)[0]])
    assert len(plain) == 1 and len(plain[0]) == 2
    assert len(views) == 2 and [m["flip"] for v in views for m in v.metas] == [False, True]
    assert os.path.basename(views[1].metas[0]["filename"]) == "000001.jpg"
