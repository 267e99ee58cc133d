"""The tester keeps a mask detector's masks as RLE: encoded batch by batch, bitmaps dropped
before the next batch runs, carried through the distributed gather, and scored as segm AP."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from detcli.data.datasets import CocoDataset
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.evaluation import evaluate
from detcli.engine.tester import build_test_loader, gather_by_index, run_inference
from detcli.evaluation.config import EvaluationConfig
from detcli.evaluation.evaluator import build_evaluator
from detcli.structures.detections import Detections
from detcli.structures.mask_rle import decode_masks, encode_masks
from detcli.structures.masks import segmentation_to_bitmap

from tests.engine.test_tester import PLAIN

import pytest


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), num_train=0, num_val=5,
                                  image_size=64, seed=2, empty_ratio=0.4)


def dataset(synth) -> CocoDataset:
    return CocoDataset(ann_file=str(synth.ann_file("val")),
                       img_prefix=str(synth.img_prefix("val")), pipeline=PLAIN, test_mode=True)


def gt_masks(ds: CocoDataset, i: int) -> np.ndarray:
    """(G, H, W) uint8: image i's GT polygons rasterised (what the oracle predicts)."""
    info = ds.img_infos[i]
    h, w = info["height"], info["width"]
    segms = ds.get_ann_masks(i)
    if not segms:
        return np.zeros((0, h, w), np.uint8)
    return np.stack([segmentation_to_bitmap(s, h, w) for s in segms])


class MaskOracle(nn.Module):
    """Predicts each image's GT boxes and masks at score 0.9, and checks that no bitmap it gave
    for an earlier batch is still alive when it runs the next one."""

    def __init__(self, ds: CocoDataset) -> None:
        super().__init__()
        index = {info["id"]: i for i, info in enumerate(ds.img_infos)}
        self.gt = {image_id: (ds.get_ann_info(i), gt_masks(ds, i)) for image_id, i in index.items()}
        self.handed_out: list[weakref.ref] = []
        self.alive_at_call: list[int] = []

    def predict(self, images, rescale: bool = True) -> list[Detections]:
        gc.collect()
        self.alive_at_call.append(sum(ref() is not None for ref in self.handed_out))
        out = []
        for meta in images.metas:
            ann, masks = self.gt[meta["image_id"]]
            bitmaps = torch.from_numpy(masks).bool()  # (G, H, W)
            self.handed_out.append(weakref.ref(bitmaps))
            out.append(Detections(torch.from_numpy(ann["bboxes"]),
                                  torch.full((len(ann["labels"]),), 0.9),
                                  torch.from_numpy(ann["labels"]), masks=bitmaps))
        return out


def test_masks_come_back_as_rle_and_no_batch_keeps_its_bitmaps(synth):
    ds = dataset(synth)
    model = MaskOracle(ds)
    found = run_inference(model, build_test_loader(ds, samples_per_gpu=2), "cpu")
    assert model.alive_at_call == [0, 0, 0]  # 3 batches of 2, 2, 1 images
    gc.collect()
    assert all(ref() is None for ref in model.handed_out)
    for i, dets in enumerate(found):
        assert dets.masks is None and dets.mask_rles is not None
        info = ds.img_infos[i]
        np.testing.assert_array_equal(decode_masks(dets.mask_rles, info["height"], info["width"]),
                                      gt_masks(ds, i).astype(bool))


def test_segm_of_the_oracles_masks_is_perfect(synth):
    ds = dataset(synth)
    evaluator = build_evaluator(EvaluationConfig(metric=["bbox", "segm"]), ds)
    evaluated = evaluate(MaskOracle(ds), build_test_loader(ds, samples_per_gpu=2), evaluator,
                         "cpu")
    metrics = evaluated.metrics
    assert metrics["bbox_mAP"] == 1.0 and metrics["segm_mAP"] == 1.0
    assert metrics["segm_AR@100"] == 1.0
    assert all(d.masks is None and d.mask_rles is not None for d in evaluated.detections)


def _gather_worker(rank: int, world: int, init_file: str, out: dict) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP thread pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mine = {}
        for i in ([0, 2] if rank == 0 else [1, 0]):
            mask = torch.zeros(1, 8, 8, dtype=torch.bool)
            mask[0, : i + 1, : i + 2] = True  # (i + 1) * (i + 2) pixels
            mine[i] = Detections(torch.zeros(1, 4), torch.ones(1), torch.zeros(1, dtype=torch.long),
                                 masks=mask).with_encoded_masks()
        gathered = gather_by_index(mine, 3)
        out[rank] = [(d.masks is None, d.mask_rles[0].area) for d in gathered]
    finally:
        dist.destroy_process_group()


def test_the_distributed_gather_carries_the_rles(tmp_path):
    out = mp.Manager().dict()
    mp.start_processes(_gather_worker, args=(2, str(tmp_path / "init"), out), nprocs=2,
                       join=True, start_method="fork")
    expected = [(True, 2), (True, 6), (True, 12)]
    assert dict(out) == {0: expected, 1: expected}


def test_encoding_then_decoding_is_lossless_on_a_pasted_size_image():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 37, 53)) > 0.5  # (D, H, W), not square, odd sizes
    np.testing.assert_array_equal(decode_masks(encode_masks(masks), 37, 53), masks)
