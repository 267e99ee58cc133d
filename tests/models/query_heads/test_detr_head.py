"""DETRHead by hand: the set loss on a two-query example, the auxiliary keys, top-k predict."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detcli.models.query_heads.detr_head import DETRHead, DETRHeadConfig, DETRTestConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.queries import QueryOutputs


def head(max_per_img: int = 100) -> DETRHead:
    cfg = DETRHeadConfig(num_classes=2, embed_dims=8)
    return DETRHead.from_config(cfg, test_cfg=DETRTestConfig(max_per_img=max_per_img))


def images(h: int = 100, w: int = 100) -> ImageBatch:
    return ImageBatch(tensor=torch.zeros(1, 3, h, w), img_shapes=[(h, w)], ori_shapes=[(h, w)],
                      scale_factors=torch.ones(1, 4))


def two_queries(num_layers: int = 1) -> QueryOutputs:
    # query 0: uniform logits, box (5, 0, 55, 50); query 1: background favoured, far away
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.log(2.0)]])
    boxes = torch.tensor([[0.30, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])
    return QueryOutputs(logits.expand(num_layers, 1, 2, 3), boxes.expand(num_layers, 1, 2, 4))


def one_gt() -> DetTargets:
    return DetTargets.from_lists([torch.tensor([[0.0, 0.0, 50.0, 50.0]])], [torch.tensor([1])])


def test_set_loss_on_two_queries():
    losses = head().loss(two_queries(), images(), one_gt())
    assert set(losses) == {"loss_cls", "loss_bbox", "loss_iou"}
    # query 0 matches (cost -1/3 + 0.25 - 2 * 9/11 against query 1's -1/4 + 5 + 1); the class
    # loss: CE ln 3 for query 0 (weight 1), ln 2 towards background for query 1 (weight 0.1),
    # divided by 1 matched + 0.1 x 1 unmatched
    assert losses["loss_cls"].item() == pytest.approx(
        (math.log(3) + 0.1 * math.log(2)) / 1.1, rel=1e-5)
    # L1 of (0.30, 0.25, 0.5, 0.5) against (0.25, 0.25, 0.5, 0.5), weight 5, one GT
    assert losses["loss_bbox"].item() == pytest.approx(5 * 0.05, rel=1e-5)
    # GIoU of (5, 0, 55, 50) and (0, 0, 50, 50): IoU 2250 / 2750, enclosing = union
    assert losses["loss_iou"].item() == pytest.approx(2 * (1 - 9 / 11), rel=1e-5)


def test_every_decoder_layer_gets_its_loss_under_mmdetections_keys():
    losses = head().loss(two_queries(num_layers=3), images(), one_gt())
    assert list(losses) == ["loss_cls", "loss_bbox", "loss_iou", "d0.loss_cls", "d0.loss_bbox",
                            "d0.loss_iou", "d1.loss_cls", "d1.loss_bbox", "d1.loss_iou"]
    for name in ("loss_cls", "loss_bbox", "loss_iou"):
        assert losses[f"d1.{name}"].item() == pytest.approx(losses[name].item())


def test_an_image_without_gt_trains_every_query_as_background():
    targets = DetTargets.from_lists([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    losses = head().loss(two_queries(), images(), targets)
    # weights 0.1 each, normaliser max(0.1 x 2, 1) = 1
    assert losses["loss_cls"].item() == pytest.approx(
        0.1 * (math.log(3) + math.log(2)), rel=1e-5)
    assert losses["loss_bbox"].item() == 0 and losses["loss_iou"].item() == 0


def test_predict_keeps_the_top_k_queries_by_their_best_class():
    outputs = QueryOutputs(
        torch.log(torch.tensor([[[[0.2, 0.3, 0.5], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]]]])),
        torch.tensor([[[[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]]]]))
    batch = ImageBatch(tensor=torch.zeros(1, 3, 100, 200), img_shapes=[(100, 200)],
                       ori_shapes=[(50, 100)], scale_factors=torch.full((1, 4), 2.0))
    dets = head(max_per_img=2).predict(outputs, batch, rescale=False)
    assert dets.num_dets.tolist() == [2]
    torch.testing.assert_close(dets.scores[0], torch.tensor([0.6, 0.3]))
    assert dets.labels[0].tolist() == [0, 1]
    # query 1: centre (20, 90), size (80, 40) -> (-20, 70, 60, 110), clipped to 200 x 100
    torch.testing.assert_close(dets.boxes[0, 0], torch.tensor([0.0, 70.0, 60.0, 100.0]))
    # query 0: (80, 30, 120, 70)
    torch.testing.assert_close(dets.boxes[0, 1], torch.tensor([80.0, 30.0, 120.0, 70.0]))
    rescaled = head(max_per_img=2).predict(outputs, batch, rescale=True)
    torch.testing.assert_close(rescaled.boxes, dets.boxes / 2)


def test_state_dict_names_are_mmdetections():
    assert set(head().state_dict()) == {
        "fc_cls.weight", "fc_cls.bias", "reg_ffn.layers.0.0.weight", "reg_ffn.layers.0.0.bias",
        "reg_ffn.layers.1.weight", "reg_ffn.layers.1.bias", "fc_reg.weight", "fc_reg.bias"}


def _ddp_worker(rank: int, world: int, init_file: str, out: dict) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP thread pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        box = [0.0, 0.0, 50.0, 50.0]
        count = rank + 1
        gt = DetTargets.from_lists([torch.tensor([box] * count)], [torch.tensor([1] * count)])
        cfg = DETRHeadConfig(num_classes=2, embed_dims=8, sync_cls_avg_factor=True)
        losses = DETRHead.from_config(cfg).loss(two_queries(), images(), gt)
        out[rank] = {k: float(v.detach()) for k, v in losses.items()}
    finally:
        dist.destroy_process_group()


def test_under_ddp_the_normalisers_are_the_means_over_ranks(tmp_path):
    out = mp.Manager().dict()
    # rank 0: one GT (one matched query), rank 1: two GT (both queries matched)
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2,
                       join=True, start_method="fork")
    rank0 = out[0]
    # box losses over the mean matched count (1 + 2) / 2; the class loss (sync_cls_avg_factor)
    # over the mean of 1 + 0.1 x 1 and 2 + 0.1 x 0
    assert rank0["loss_bbox"] == pytest.approx(5 * 0.05 / 1.5, rel=1e-5)
    assert rank0["loss_iou"] == pytest.approx(2 * (1 - 9 / 11) / 1.5, rel=1e-5)
    assert rank0["loss_cls"] == pytest.approx(
        (math.log(3) + 0.1 * math.log(2)) / 1.55, rel=1e-5)
