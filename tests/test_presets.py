"""Every preset resolves and validates; retinanet_r50 matches the seed's MMDetection config."""

from pathlib import Path

import pytest

from detcli.config.diff import flatten
from detcli.config.loader import load_config

PRESETS = Path(__file__).resolve().parents[1] / "presets"
ALL = sorted(p for p in PRESETS.rglob("*.toml") if "_base" not in p.parts)

NORM = dict(type="Normalize", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
TEST_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="MultiScaleFlipAug", img_scale=(1333, 800), flip=False, transforms=[
        dict(type="Resize", keep_ratio=True),
        dict(type="RandomFlip"),
        NORM,
        dict(type="Pad", size_divisor=32),
        dict(type="ImageToTensor", keys=["img"]),
        dict(type="Collect", keys=["img"]),
    ]),
]
# retinanet_r50_fpn_1x_coco.py as printed by MMDetection's print_config.py (the seed article).
SEED = dict(
    model=dict(
        type="RetinaNet",
        backbone=dict(type="ResNet", depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True, style="pytorch",
                      init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet50")),
        neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
                  add_extra_convs="on_input", num_outs=5),
        bbox_head=dict(
            type="RetinaHead", num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256,
            anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100)),
    data=dict(
        samples_per_gpu=2, workers_per_gpu=2,
        train=dict(type="CocoDataset", ann_file="data/coco/annotations/instances_train2017.json",
                   img_prefix="data/coco/train2017/", pipeline=[
                       dict(type="LoadImageFromFile"),
                       dict(type="LoadAnnotations", with_bbox=True),
                       dict(type="Resize", img_scale=(1333, 800), keep_ratio=True),
                       dict(type="RandomFlip", flip_ratio=0.5),
                       NORM,
                       dict(type="Pad", size_divisor=32),
                       dict(type="DefaultFormatBundle"),
                       dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"]),
                   ]),
        val=dict(type="CocoDataset", ann_file="data/coco/annotations/instances_val2017.json",
                 img_prefix="data/coco/val2017/", pipeline=TEST_PIPELINE),
        test=dict(type="CocoDataset", ann_file="data/coco/annotations/instances_val2017.json",
                  img_prefix="data/coco/val2017/", pipeline=TEST_PIPELINE)),
    evaluation=dict(interval=1, metric="bbox"),
    optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001),
    optimizer_config=dict(grad_clip=None),
    lr_config=dict(policy="step", warmup="linear", warmup_iters=500, warmup_ratio=0.001, step=[8, 11]),
    runner=dict(type="EpochBasedRunner", max_epochs=12),
    checkpoint_config=dict(interval=1),
    log_config=dict(interval=50, hooks=[dict(type="TextLoggerHook")]),
    custom_hooks=[dict(type="NumClassCheckHook")],
    dist_params=dict(backend="nccl"),
    log_level="INFO",
    load_from=None,
    resume_from=None,
    workflow=[("train", 1)],
)


CAFFE_NORM = dict(type="Normalize", mean=[102.9801, 115.9465, 122.7717], std=[1.0, 1.0, 1.0],
                  to_rgb=False)
CAFFE_TEST_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="MultiScaleFlipAug", img_scale=(1333, 800), flip=False, transforms=[
        dict(type="Resize", keep_ratio=True),
        dict(type="RandomFlip"),
        CAFFE_NORM,
        dict(type="Pad", size_divisor=32),
        dict(type="ImageToTensor", keys=["img"]),
        dict(type="Collect", keys=["img"]),
    ]),
]
# What is shared by the three 1x COCO configs below besides their model and optimizer.
RUNTIME = {k: SEED[k] for k in ("evaluation", "runner", "checkpoint_config", "log_config",
                                 "custom_hooks", "dist_params", "log_level", "load_from",
                                 "resume_from", "workflow")}
# fcos_r50_caffe_fpn_gn-head_1x_coco.py as MMDetection 2.x's print_config.py prints it.
FCOS_SEED = dict(
    model=dict(
        type="FCOS",
        backbone=dict(type="ResNet", depth=50, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=1,
                      norm_cfg=dict(type="BN", requires_grad=False), norm_eval=True, style="caffe",
                      init_cfg=dict(type="Pretrained",
                                    checkpoint="open-mmlab://detectron/resnet50_caffe")),
        neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
                  add_extra_convs="on_output", num_outs=5, relu_before_extra_convs=True),
        bbox_head=dict(
            type="FCOSHead", num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256,
            strides=[8, 16, 32, 64, 128],
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="IoULoss", loss_weight=1.0),
            loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                     ignore_iof_thr=-1),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=100)),
    data=dict(
        samples_per_gpu=2, workers_per_gpu=2,
        train=dict(type="CocoDataset", ann_file="data/coco/annotations/instances_train2017.json",
                   img_prefix="data/coco/train2017/", pipeline=[
                       dict(type="LoadImageFromFile"),
                       dict(type="LoadAnnotations", with_bbox=True),
                       dict(type="Resize", img_scale=(1333, 800), keep_ratio=True),
                       dict(type="RandomFlip", flip_ratio=0.5),
                       CAFFE_NORM,
                       dict(type="Pad", size_divisor=32),
                       dict(type="DefaultFormatBundle"),
                       dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels"]),
                   ]),
        val=dict(type="CocoDataset", ann_file="data/coco/annotations/instances_val2017.json",
                 img_prefix="data/coco/val2017/", pipeline=CAFFE_TEST_PIPELINE),
        test=dict(type="CocoDataset", ann_file="data/coco/annotations/instances_val2017.json",
                  img_prefix="data/coco/val2017/", pipeline=CAFFE_TEST_PIPELINE)),
    optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001,
                   paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0)),
    optimizer_config=dict(grad_clip=dict(max_norm=35, norm_type=2)),
    lr_config=dict(policy="step", warmup="constant", warmup_iters=500, warmup_ratio=1.0 / 3, step=[8, 11]),
    **RUNTIME,
)
# atss_r50_fpn_1x_coco.py as MMDetection 2.x's print_config.py prints it.
ATSS_SEED = dict(
    model=dict(
        type="ATSS",
        backbone=SEED["model"]["backbone"],
        neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
                  add_extra_convs="on_output", num_outs=5),
        bbox_head=dict(
            type="ATSSHead", num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256,
            anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8,
                                  scales_per_octave=1, strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
            loss_centerness=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type="ATSSAssigner", topk=9), allowed_border=-1, pos_weight=-1,
                       debug=False),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.6),
                      max_per_img=100)),
    data=SEED["data"],
    optimizer=dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=0.0001),
    optimizer_config=dict(grad_clip=None),
    lr_config=SEED["lr_config"],
    **RUNTIME,
)
# faster_rcnn_r50_fpn_1x_coco.py as MMDetection 2.x's print_config.py prints it.
FASTER_RCNN_SEED = dict(
    model=dict(
        type="FasterRCNN",
        backbone=SEED["model"]["backbone"],
        neck=dict(type="FPN", in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        rpn_head=dict(
            type="RPNHead", in_channels=256, feat_channels=256,
            anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(type="SingleRoIExtractor",
                                    roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0),
                                    out_channels=256, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(
                type="Shared2FCBBoxHead", in_channels=256, fc_out_channels=1024, roi_feat_size=7,
                num_classes=80,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0, 0.0, 0.0, 0.0],
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                              match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type="RandomSampler", num=256, pos_fraction=0.5, neg_pos_ub=-1,
                             add_gt_as_proposals=False),
                allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7),
                              min_bbox_size=0),
            rcnn=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                              match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type="RandomSampler", num=512, pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=True),
                pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100))),
    data=SEED["data"],
    optimizer=dict(type="SGD", lr=0.02, momentum=0.9, weight_decay=0.0001),
    optimizer_config=dict(grad_clip=None),
    lr_config=SEED["lr_config"],
    **RUNTIME,
)
# mask-rcnn_r50_fpn_1x_coco.py as MMDetection 3.3 resolves it: Faster R-CNN's model with the
# mask branch, the R-CNN assigner's match_low_quality on, mask_size and mask_thr_binary; the
# COCO pipeline loading masks; bbox and segm evaluation.
_MASK_HEAD = dict(type="FCNMaskHead", num_convs=4, in_channels=256, conv_out_channels=256,
                  num_classes=80,
                  loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))
_FRCNN = FASTER_RCNN_SEED["model"]
MASK_RCNN_SEED = dict(
    model=dict(
        _FRCNN, type="MaskRCNN",
        roi_head=dict(
            _FRCNN["roi_head"],
            mask_roi_extractor=dict(type="SingleRoIExtractor",
                                    roi_layer=dict(type="RoIAlign", output_size=14,
                                                   sampling_ratio=0),
                                    out_channels=256, featmap_strides=[4, 8, 16, 32]),
            mask_head=_MASK_HEAD),
        train_cfg=dict(_FRCNN["train_cfg"], rcnn=dict(
            _FRCNN["train_cfg"]["rcnn"], mask_size=28,
            assigner=dict(_FRCNN["train_cfg"]["rcnn"]["assigner"], match_low_quality=True))),
        test_cfg=dict(_FRCNN["test_cfg"], rcnn=dict(_FRCNN["test_cfg"]["rcnn"],
                                                    mask_thr_binary=0.5))),
    data=dict(train=dict(pipeline=[
        dict(type="LoadImageFromFile"),
        dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
        dict(type="Resize", img_scale=(1333, 800), keep_ratio=True),
        dict(type="RandomFlip", flip_ratio=0.5),
        NORM,
        dict(type="Pad", size_divisor=32),
        dict(type="DefaultFormatBundle"),
        dict(type="Collect", keys=["img", "gt_bboxes", "gt_labels", "gt_masks"]),
    ])),
    evaluation=dict(metric=["bbox", "segm"]),
    optimizer=FASTER_RCNN_SEED["optimizer"],
)
# The mask head defaults MMDetection 3.3 fills in (FCNMaskHead's, mmcv's RoIAlign).
MASK_RCNN_DEFAULTS = dict(model=dict(roi_head=dict(
    mask_roi_extractor=dict(roi_layer=dict(aligned=True), finest_scale=56),
    mask_head=dict(roi_feat_size=14, conv_kernel_size=3, class_agnostic=False,
                   upsample_cfg=dict(type="deconv", scale_factor=2), norm_cfg=None))))
# Defaults MMDetection fills in (mmcv's RoIAlign, SingleRoIExtractor, RPNHead) that the preset
# leaves to the schema.
FASTER_RCNN_DEFAULTS = dict(model=dict(
    rpn_head=dict(num_convs=1, reg_decoded_bbox=False),
    roi_head=dict(bbox_roi_extractor=dict(roi_layer=dict(aligned=True), finest_scale=56),
                  bbox_head=dict(reg_decoded_bbox=False)),
    neck=dict(start_level=0, add_extra_convs=False)))
# The head defaults MMDetection fills in (FCOSHead's, ATSSHead's): the presets write them out
# or leave them to the schema, and either way they must resolve to these.
HEAD_DEFAULTS = {
    "fcos_r50.toml": dict(regress_ranges=[[-1, 64], [64, 128], [128, 256], [256, 512], [512, 1e8]],
                          center_sampling=False, center_sample_radius=1.5, norm_on_bbox=False,
                          centerness_on_reg=False, conv_bias="auto",
                          norm_cfg=dict(type="GN", num_groups=32, requires_grad=True),
                          bbox_coder=dict(type="DistancePointBBoxCoder")),
    "atss_r50.toml": dict(norm_cfg=dict(type="GN", num_groups=32, requires_grad=True),
                          reg_decoded_bbox=True),
}


def _as_toml_data(value):
    """Python config values as TOML holds them: tuples are arrays, None is `false` (off)."""
    if isinstance(value, dict):
        return {k: _as_toml_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_toml_data(v) for v in value]
    return False if value is None else value


@pytest.mark.parametrize("preset", ALL, ids=[p.name for p in ALL])
def test_every_preset_resolves_and_validates(preset):
    loaded = load_config(preset)
    assert loaded.cfg.model.type
    assert all(origin for origin in loaded.origins.values())


def test_retinanet_r50_matches_the_seed_value_for_value():
    resolved = flatten(load_config(PRESETS / "retinanet_r50.toml").resolved())
    expected = flatten(_as_toml_data(SEED))
    mismatches = {k: (v, resolved.get(k, "<missing>")) for k, v in expected.items() if resolved.get(k) != v}
    assert mismatches == {}
    # the pipelines have exactly the seed's transforms, in order
    for split in ("train", "val", "test"):
        n = len(SEED["data"][split]["pipeline"])
        assert f"data.{split}.pipeline[{n}].type" not in resolved


def _mismatches(preset: str, seed: dict) -> dict:
    resolved = flatten(load_config(PRESETS / preset).resolved())
    expected = flatten(_as_toml_data(seed))
    return {k: (v, resolved.get(k, "<missing>")) for k, v in expected.items() if resolved.get(k) != v}


@pytest.mark.parametrize("preset, seed", [("fcos_r50.toml", FCOS_SEED), ("atss_r50.toml", ATSS_SEED)])
def test_fcos_and_atss_match_mmdetection_value_for_value(preset, seed):
    assert _mismatches(preset, seed) == {}
    head = {"model": {"bbox_head": HEAD_DEFAULTS[preset]}}
    assert _mismatches(preset, head) == {}
    resolved = flatten(load_config(PRESETS / preset).resolved())
    for split in ("train", "val", "test"):
        n = len(seed["data"][split]["pipeline"])
        assert f"data.{split}.pipeline[{n}].type" not in resolved


def test_faster_rcnn_r50_matches_mmdetection_value_for_value():
    assert _mismatches("faster_rcnn_r50.toml", FASTER_RCNN_SEED) == {}
    assert _mismatches("faster_rcnn_r50.toml", FASTER_RCNN_DEFAULTS) == {}


def test_mask_rcnn_r50_matches_mmdetection_value_for_value():
    assert _mismatches("mask_rcnn_r50.toml", MASK_RCNN_SEED) == {}
    assert _mismatches("mask_rcnn_r50.toml", MASK_RCNN_DEFAULTS) == {}
    assert _mismatches("mask_rcnn_r50.toml", FASTER_RCNN_DEFAULTS) == {}
    resolved = flatten(load_config(PRESETS / "mask_rcnn_r50.toml").resolved())
    assert "data.train.pipeline[8].type" not in resolved
    origins = load_config(PRESETS / "mask_rcnn_r50.toml").origins
    for key in (("model", "roi_head", "mask_roi_extractor", "out_channels"),
                ("model", "roi_head", "mask_head", "in_channels")):
        assert origins[key].startswith("derived"), key


def test_mask_rcnn_r101_differs_from_r50_in_depth_and_weights_only():
    r50 = flatten(load_config(PRESETS / "mask_rcnn_r50.toml").resolved())
    r101 = flatten(load_config(PRESETS / "mask_rcnn_r101.toml").resolved())
    changed = {k: (r50.get(k), r101.get(k)) for k in set(r50) | set(r101) if r50.get(k) != r101.get(k)}
    assert changed == {
        "model.backbone.depth": (50, 101),
        "model.backbone.init_cfg.checkpoint": ("torchvision://resnet50", "torchvision://resnet101"),
    }


def test_faster_rcnn_derived_channels_are_marked():
    origins = load_config(PRESETS / "faster_rcnn_r50.toml").origins
    for key in (("model", "neck", "in_channels"), ("model", "rpn_head", "in_channels"),
                ("model", "roi_head", "bbox_roi_extractor", "out_channels"),
                ("model", "roi_head", "bbox_head", "in_channels")):
        assert origins[key].startswith("derived"), key


def test_derived_channels_are_marked():
    loaded = load_config(PRESETS / "retinanet_r50.toml")
    assert loaded.origins[("model", "neck", "in_channels")].startswith("derived")
    assert loaded.origins[("model", "bbox_head", "in_channels")].startswith("derived")


def test_faster_rcnn_r101_differs_from_r50_in_depth_and_weights_only():
    r50 = flatten(load_config(PRESETS / "faster_rcnn_r50.toml").resolved())
    r101 = flatten(load_config(PRESETS / "faster_rcnn_r101.toml").resolved())
    changed = {k: (r50.get(k), r101.get(k)) for k in set(r50) | set(r101) if r50.get(k) != r101.get(k)}
    assert changed == {
        "model.backbone.depth": (50, 101),
        "model.backbone.init_cfg.checkpoint": ("torchvision://resnet50", "torchvision://resnet101"),
    }
