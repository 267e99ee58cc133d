"""Mixed-image pipelines in a loader: the same samples under a seed whoever loads them (0 or 2
workers, persistent or not), other draws in another epoch; and a pipeline switched by epoch
(PipelineSwitchHook's mechanism) reaching persistent workers."""

from __future__ import annotations

import pytest
import torch

from detcli.data.datasets.coco import CocoDataset
from detcli.data.loader import build_dataloader, set_epoch
from detcli.data.synth import make_synthetic_dataset

FORMAT = [{"type": "DefaultFormatBundle"},
          {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]}]
MOSAIC = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True},
          {"type": "Mosaic", "img_scale": [32, 32]},
          {"type": "RandomAffine", "border": [-16, -16]},
          {"type": "MixUp", "img_scale": [32, 32]},
          {"type": "YOLOXHSVRandomAug"}, {"type": "RandomFlip", "flip_ratio": 0.5},
          {"type": "Pad", "size": [64, 64], "pad_val": {"img": [114, 114, 114]}}, *FORMAT]
PLAIN = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True},
         {"type": "Resize", "img_scale": [24, 24], "keep_ratio": True},
         {"type": "Pad", "size": [24, 24]}, *FORMAT]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("mix") / "synth", num_train=8,
                                  num_val=2, image_size=64, seed=0)


def dataset(synth, pipeline):
    return CocoDataset(ann_file=str(synth.ann_file("train")),
                       img_prefix=str(synth.img_prefix("train")) + "/", pipeline=pipeline)


def batches(ds, workers, epoch=0, persistent=False, epochs=(None,)):
    loader = build_dataloader(ds, 2, workers, shuffle=True, seed=3, pin_memory=False,
                              per_sample_seeds=True, persistent_workers=persistent,
                              on_epoch=ds.set_epoch)
    out = []
    for e in (epoch,) if epochs == (None,) else epochs:
        set_epoch(loader, e)
        out.append([(images.tensor.clone(), targets.boxes.clone(), targets.labels.clone())
                    for images, targets in loader])
    return out if epochs != (None,) else out[0]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for ba, bb in zip(a, b) for x, y in zip(ba, bb))


def test_mosaic_samples_do_not_depend_on_who_loads_them(synth):
    ds = dataset(synth, MOSAIC)
    main = batches(ds, 0)
    assert main[0][0].shape[-2:] == (64, 64)
    assert same(main, batches(ds, 0))
    assert same(main, batches(ds, 2))
    assert same(main, batches(ds, 2, persistent=True))
    assert not same(main, batches(ds, 0, epoch=1))  # another epoch: other images mixed in


def test_a_switched_pipeline_reaches_persistent_workers(synth):
    ds = dataset(synth, MOSAIC)
    ds.switch_pipeline(1, PLAIN)
    first, second = batches(ds, 2, persistent=True, epochs=(0, 1))
    assert {b[0].shape[-1] for b in first} == {64} and {b[0].shape[-1] for b in second} == {24}
    again = batches(ds, 0, epochs=(1,))[0]
    assert same(second, again)  # the stage-2 samples are a function of the epoch alone
    ds.set_epoch(0)
    assert ds.pipeline.names[2] == "Mosaic"
