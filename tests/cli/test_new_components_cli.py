"""A dense head and a RoI box head defined only in test files, each with its own registered
name, work in every command with no change in detcli/ (issue #16's "Done when"): `det train`
(1 epoch, tiny), `det test`, `det test --tta`, `det export onnx` (verified by onnxruntime),
`det viz assign` and `det analyze anchors`, all in-process through typer's CliRunner on a
config written here that extends a tiny preset and names the test-file head.

The dense head is ``SharedTowerTestHead`` of tests/models/test_new_dense_head.py (one shared
3x3 conv, 1x1 predictors, its anchors under the config key ``priors``). The box head is
``OneFCTestBoxHead`` below: one shared fully connected layer of its own width instead of
Shared2FCBBoxHead's two. The export is verified on a checkpoint whose predictors are widened
so that every image keeps detections (an untrained tiny model keeps none, and an empty
comparison fails verification)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.config.schema import Schema
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector
from detcli.models.losses import CrossEntropyLossConfig, L1LossConfig
from detcli.models.roi_heads.bbox_head import Shared2FCBBoxHead
from detcli.registry import BBOX_HEADS, LOSSES
from tests.models.test_new_dense_head import SharedTowerHead  # noqa: F401  (registers it)

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "presets"
CLASSES = ["square", "circle", "triangle"]


class OneFCTestBoxHeadConfig(Schema):
    type: Literal["OneFCTestBoxHead"] = "OneFCTestBoxHead"
    num_classes: int = Field(3, ge=1)  # a default: tests/test_components.py builds it bare
    in_channels: int | None = None  # the RoI extractor's, filled when the config resolves
    roi_feat_size: int = 7
    hidden: int = 24


@BBOX_HEADS.register(OneFCTestBoxHeadConfig)
class OneFCTestBoxHead(Shared2FCBBoxHead):
    """(R, C, S, S) -flatten-> one FC + ReLU of ``hidden`` units -> K + 1 logits, 4K deltas.
    Built by ``Registry.build`` from its fields (``in_channels`` the RoI extractor's, filled
    in by the detector's config)."""

    from_config = None  # not the parent's: Registry.build passes this config's fields

    def __init__(self, *, num_classes: int, in_channels: int, roi_feat_size: int,
                 hidden: int) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels,
                         roi_feat_size=roi_feat_size, fc_out_channels=hidden,
                         loss_cls=LOSSES.build(CrossEntropyLossConfig()),
                         loss_bbox=LOSSES.build(L1LossConfig()))
        del self.shared_fcs
        self.hidden = nn.Linear(in_channels * roi_feat_size * roi_feat_size, hidden)

    def init_weights(self) -> None:  # the parent's, for the layers this head has
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.hidden(roi_feats.flatten(1)))  # (R, hidden)
        return self.fc_cls(x), self.fc_reg(x)  # (R, K + 1), (R, 4K)


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_config(root: Path, preset: str, model: str) -> tuple[Path, Path]:
    """A config under ``root`` extending ``preset`` with ``model`` (TOML), on 4 + 2 synthetic
    images of 96 px -> (config, a folder of the validation images)."""
    synth = make_synthetic_dataset(root / "synth", num_train=4, num_val=2, image_size=96, seed=3)
    splits = "".join(
        f'[data.{split}]\nann_file = "{synth.ann_file(src)}"\nimg_prefix = "{synth.img_prefix(src)}/"\n'
        for split, src in (("train", "train"), ("val", "val"), ("test", "val")))
    config = root / "new_head.toml"
    config.write_text(
        f'extends = ["{PRESETS / preset}"]\n' + model +
        "[data]\nsamples_per_gpu = 2\nworkers_per_gpu = 0\n" + splits +
        "[runner]\nmax_epochs = 1\n[evaluation]\ninterval = 1\n[log_config]\ninterval = 1\n")
    return config, Path(synth.img_prefix("val"))


def train_test_tta(config: Path, work: Path) -> Path:
    result = run("train", config, "--work-dir", work, "--device", "cpu")
    assert result.exit_code == 0, result.output
    checkpoint = work / "latest.pth"
    assert checkpoint.exists()
    result = run("test", config, checkpoint, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["num_images"] == 2 and "bbox_mAP" in report["metrics"]
    result = run("test", config, checkpoint, "--json", "--tta", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "bbox_mAP" in json.loads(result.stdout)["metrics_tta"]
    return checkpoint


def export_verified(config: Path, model: nn.Module, out: Path) -> None:
    checkpoint = save_checkpoint(out.with_suffix(".pth"), model, meta={"classes": CLASSES},
                                 rng=False)
    result = run("export", "onnx", config, checkpoint, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["verification"]["ok"], report["verification"]
    assert out.is_file()


def assign_and_analyze(config: Path, images: Path, tmp_path: Path) -> dict:
    image = sorted(images.iterdir())[0]
    picture = tmp_path / "assign.png"
    result = run("viz", "assign", image, "-c", config, "--box", "10,10,50,50", "--out",
                 picture, "--json")
    assert result.exit_code == 0, result.output
    assign = json.loads(result.stdout)
    assert assign["counts"]["positive"] > 0 and picture.is_file()
    result = run("analyze", "anchors", config, "--json")
    assert result.exit_code == 0, result.output
    return assign, json.loads(result.stdout)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread (as tests/engine's): tiny models on a busy machine run faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_test_file_dense_head_works_in_every_command(tmp_path):
    config, images = write_config(
        tmp_path, "retinanet_tiny_synth.toml",
        "[model.backbone]\nbase_channels = 8\n[model.neck]\nout_channels = 16\n"
        '[model.bbox_head]\ntype = "SharedTowerTestHead"\nnum_classes = 3\n'
        "[model.test_cfg]\nnms_pre = 200\n")
    checkpoint = train_test_tta(config, tmp_path / "work")
    model = build_detector(load_config(config).cfg.model).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    head = model.bbox_head
    assert type(head).__name__ == "SharedTowerHead"
    with torch.no_grad():  # spread scores and boxes, so the verification compares detections
        nn.init.kaiming_normal_(head.tower.conv.weight, nonlinearity="relu")
        nn.init.normal_(head.cls.weight, std=1.0)
        nn.init.constant_(head.cls.bias, -3.0)
        head.reg.weight.mul_(0.3)
    export_verified(config, model, tmp_path / "dense.onnx")
    assign, anchors = assign_and_analyze(config, images, tmp_path)
    assert anchors["anchors"]["config_key"] == "model.bbox_head.priors"  # its generator_key
    assert assign["assigner"] == "MaxIoUAssigner" and assign["sampler"] == "PseudoSampler"
    # the head's own anchors (3 scales x 3 ratios per location), found through the built head
    assert anchors["anchors"]["num_base_priors"] == [9] * 5
    assert anchors["overall"]["num_gt"] == anchors["dataset"]["num_gt"] > 0
    assert anchors["priors"]["positive_share"] > 0


def test_a_test_file_roi_box_head_works_in_every_command(tmp_path):
    config, images = write_config(
        tmp_path, "faster_rcnn_tiny_synth.toml",
        "[model.backbone]\nbase_channels = 8\n[model.neck]\nout_channels = 16\n"
        "[model.rpn_head]\nfeat_channels = 16\n"
        '[model.roi_head.bbox_head]\ntype = "OneFCTestBoxHead"\nnum_classes = 3\n')
    checkpoint = train_test_tta(config, tmp_path / "work")
    model = build_detector(load_config(config).cfg.model).eval()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    rpn, box_head = model.rpn_head, model.roi_head.bbox_head
    assert type(box_head).__name__ == "OneFCTestBoxHead" and not hasattr(box_head, "shared_fcs")
    with torch.no_grad():  # proposals of many sizes, spread class scores above score_thr
        nn.init.kaiming_normal_(rpn.rpn_conv.weight, nonlinearity="relu")
        nn.init.normal_(rpn.rpn_cls.weight, std=0.1)
        nn.init.constant_(rpn.rpn_cls.bias, -1.0)
        nn.init.normal_(rpn.rpn_reg.weight, std=0.05)
        rpn.rpn_reg.bias.view(3, 4)[:, 2:] = torch.tensor([0.0, 1.0, 2.2])[:, None]
        nn.init.normal_(box_head.fc_cls.weight, std=0.3)
        box_head.fc_cls.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))  # background last
        nn.init.normal_(box_head.fc_reg.weight, std=0.05)
    export_verified(config, model, tmp_path / "two_stage.onnx")
    assign, anchors = assign_and_analyze(config, images, tmp_path)
    assert assign["rcnn"]["counts"]["sampled_positive"] > 0  # the RoI head's sampling, replayed
    assert anchors["anchors"]["config_key"] == "model.rpn_head.anchor_generator"
    assert anchors["priors"]["positive_share"] > 0
