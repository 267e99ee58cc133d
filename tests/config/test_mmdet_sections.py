"""``det config import``'s data and schedule translation (detcli/config/mmdet_sections.py):
MMDetection 3.x dataloaders, pipelines, optim_wrapper, param_scheduler and hooks written as
text, each det value checked by hand; what does not map is named."""

from __future__ import annotations

from pathlib import Path

from detcli.config.loader import load_config
from detcli.config.mmdet_import import import_mmdet_config
from detcli.config.mmdet_sections import translate_pipeline, translate_schedule

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet_configs"
R18 = ROOT / "retinanet" / "retinanet_r18_fpn_1x_coco.py"
PREPROCESSOR = {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0], "bgr_to_rgb": True,
                "pad_size_divisor": 32}

MY_DATA = """
_base_ = '{base}'
data_root = '/data/shapes/'
metainfo = dict(classes=('square', 'circle'))
train_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='train.json',
                 data_prefix=dict(img='images/train/')))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='val.json',
                 data_prefix=dict(img='images/val/')))
test_dataloader = val_dataloader
model = dict(bbox_head=dict(num_classes=2))
optim_wrapper = dict(optimizer=dict(lr=0.005), clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=200),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.2)]
train_cfg = dict(max_epochs=24, val_interval=3)
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=2), logger=dict(interval=10))
"""


def test_a_3x_config_for_my_data_and_schedule(tmp_path):
    (tmp_path / "mine.py").write_text(MY_DATA.format(base=R18))
    result = import_mmdet_config(tmp_path / "mine.py", out_folder=tmp_path)
    (tmp_path / "mine.toml").write_text(result.text)
    cfg = load_config(tmp_path / "mine.toml").cfg
    assert (cfg.data.samples_per_gpu, cfg.data.workers_per_gpu) == (4, 1)
    assert cfg.data.train.ann_file == "/data/shapes/train.json"
    assert cfg.data.train.img_prefix == "/data/shapes/images/train/"
    assert cfg.data.test.ann_file == "/data/shapes/val.json"
    assert list(cfg.data.train.classes) == ["square", "circle"]
    assert cfg.model.bbox_head.num_classes == 2
    assert cfg.optimizer.lr == 0.005 and cfg.optimizer_config.grad_clip.max_norm == 35
    lr = cfg.lr_config
    # LinearLR(end=200) reaches the full lr at iteration 199, as det's warmup_iters = 199
    assert (lr.warmup, lr.warmup_iters, lr.warmup_ratio) == ("linear", 199, 0.01)
    assert (lr.policy, lr.step, lr.gamma) == ("step", [16, 22], 0.2)
    assert cfg.runner.max_epochs == 24 and cfg.evaluation.interval == 3
    assert (cfg.checkpoint_config.interval, cfg.checkpoint_config.max_keep_ckpts) == (4, 2)
    assert cfg.log_config.interval == 10


def test_pack_det_inputs_becomes_normalize_pad_and_collect():
    train = translate_pipeline(
        [{"type": "LoadImageFromFile", "backend_args": None},
         {"type": "LoadAnnotations", "with_bbox": True, "with_mask": True},
         {"type": "RandomResize", "scale": (1333, 800), "ratio_range": (0.5, 2.0),
          "keep_ratio": True},
         {"type": "RandomFlip", "prob": 0.5}, {"type": "PackDetInputs"}],
        "train_pipeline", PREPROCESSOR, test=False, out=[])
    assert train == [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True, "with_mask": True},
        {"type": "RandomResize", "scale": (1333, 800), "ratio_range": (0.5, 2.0),
         "keep_ratio": True},
        {"type": "RandomFlip", "flip_ratio": 0.5},
        {"type": "Normalize", "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0], "to_rgb": True},
        {"type": "Pad", "size_divisor": 32}, {"type": "DefaultFormatBundle"},
        {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels", "gt_masks"]}]
    test = translate_pipeline(
        [{"type": "LoadImageFromFile"}, {"type": "Resize", "scale": (640, 480), "keep_ratio": True},
         {"type": "LoadAnnotations", "with_bbox": True}, {"type": "PackDetInputs"}],
        "test_pipeline", {"mean": [0, 0, 0], "std": [1, 1, 1]}, test=True, out=[])
    assert test == [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": (640, 480), "flip": False, "transforms": [
            {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"},
            {"type": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1], "to_rgb": False},
            {"type": "ImageToTensor", "keys": ["img"]}, {"type": "Collect", "keys": ["img"]}]}]


def test_a_transform_det_lacks_keeps_the_presets_pipeline_and_is_named():
    out = []
    steps = [{"type": "LoadImageFromFile"},
             {"type": "RandomChoice", "transforms": [[{"type": "Albu", "transforms": []}]]}]
    assert translate_pipeline(steps, "train_pipeline", {}, test=False, out=out) is None
    assert [(u.key, u.reason) for u in out] == [
        ("train_pipeline[1].transforms", "transform 0 (Albu) has no det counterpart under that "
                                         "name; the preset's pipeline is kept")]


def test_cosine_schedules_and_one_det_lacks():
    flat = translate_schedule({"train_cfg": {"max_epochs": 300}, "param_scheduler": [
        {"type": "LinearLR", "start_factor": 1e-5, "by_epoch": False, "begin": 0, "end": 1000},
        {"type": "CosineAnnealingLR", "eta_min": 0.0002, "begin": 150, "end": 300,
         "by_epoch": True, "convert_to_iter_based": True}]}, [])
    assert flat["lr_config"] == {"warmup": "linear", "warmup_iters": 999, "warmup_ratio": 1e-5,
                                 "warmup_by_epoch": False, "min_lr": 0.0002,
                                 "min_lr_ratio": False, "policy": "FlatCosineAnnealing",
                                 "begin_epoch": 150}
    out = []
    plain = translate_schedule({"param_scheduler": dict(type="OneCycleLR", eta_max=0.1)}, out)
    assert "lr_config" not in plain
    assert out[0].key == "param_scheduler[0]" and out[0].reason.startswith(
        "OneCycleLR(eta_max=0.1) has no det lr_config counterpart")


def test_2x_sections_carry_over_as_they_are():
    values = {"lr_config": {"policy": "step", "step": [8, 11]}, "runner": {"max_epochs": 12},
              "checkpoint_config": {"interval": 2}, "optimizer": {"type": "SGD", "lr": 0.02}}
    assert translate_schedule(values, []) == values
