"""Every loss term every family logs is one the trainer sums (issue #23).

Until ``detcli.text.is_loss_key`` matched ``loss`` anywhere in a key, only keys whose last dotted
part started with ``loss`` were summed: two-stage Deformable DETR's and DINO's ``enc_loss_*``
and DINO's ``dn_loss_*`` were logged but never trained. Here each tiny preset's model (and the
two-stage Deformable DETR, ``as_two_stage`` on the tiny preset) runs one engine
:class:`~detcli.engine.train_step.TrainStep` on the sync test's four-image batch, and its keys
are checked against the hand-written list below: the losses, which the step's ``loss`` must be
the sum of, and the metrics (``acc``), which it must leave out. A new family -- or a renamed
key -- fails until it is listed here, so a loss named in a new way cannot be left out silently.
"""

from __future__ import annotations

import math

import pytest

from detcli.data.collate import collate
from detcli.text import is_loss_key
from tests.engine.test_sync_free import PRESETS, samples, tiny_train_step

pytestmark = pytest.mark.usefixtures("one_thread")

DENSE = ["loss_cls", "loss_bbox"]
QUERY = [f"{prefix}loss_{term}" for prefix in ("", "d0.") for term in ("cls", "bbox", "iou")]
ENCODER = ["enc_loss_cls", "enc_loss_bbox", "enc_loss_iou"]
DENOISING = [f"{prefix}dn_loss_{term}" for prefix in ("", "d0.")
             for term in ("cls", "bbox", "iou")]
RPN = ["loss_rpn_cls", "loss_rpn_bbox"]
CASCADE = RPN + [f"s{i}.loss_{term}" for i in range(3) for term in ("cls", "bbox")]
CASCADE_METRICS = ["s0.acc", "s1.acc", "s2.acc"]

# (preset stem, overrides) -> (loss keys, metric keys), as the model's loss dict names them
KEYS: dict[tuple[str, tuple[str, ...]], tuple[list[str], list[str]]] = {
    ("retinanet_tiny_synth", ()): (DENSE, []),
    ("rtmdet_tiny_synth", ()): (DENSE, []),
    ("fcos_tiny_synth", ()): (DENSE + ["loss_centerness"], []),
    ("atss_tiny_synth", ()): (DENSE + ["loss_centerness"], []),
    ("faster_rcnn_tiny_synth", ()): (RPN + DENSE, ["acc"]),
    ("mask_rcnn_tiny_synth", ()): (RPN + DENSE + ["loss_mask"], ["acc"]),
    ("cascade_rcnn_tiny_synth", ()): (CASCADE, CASCADE_METRICS),
    ("cascade_mask_rcnn_tiny_synth", ()): (CASCADE + [f"s{i}.loss_mask" for i in range(3)],
                                           CASCADE_METRICS),
    ("detr_tiny_synth", ()): (QUERY, []),
    ("deformable_detr_tiny_synth", ()): (QUERY, []),
    ("deformable_detr_tiny_synth", ("model.as_two_stage=true",)): (QUERY + ENCODER, []),
    ("dino_tiny_synth", ()): (QUERY + ENCODER + DENOISING, []),
}
PRESET_FILES = {p.stem: p for p in PRESETS}


def test_every_tiny_preset_has_its_keys_listed():
    assert set(PRESET_FILES) == {stem for stem, _ in KEYS}, (
        "list the loss and metric keys of each *_tiny_synth preset in KEYS")


@pytest.mark.parametrize(("stem", "overrides"), list(KEYS),
                         ids=[" ".join((s, *o)) for s, o in KEYS])
def test_the_step_loss_is_the_sum_of_every_logged_loss(stem, overrides):
    losses, metrics = KEYS[stem, overrides]
    _, step = tiny_train_step(PRESET_FILES[stem], list(overrides))
    out = step(*collate(samples(0)))

    added = ["loss"] + (["grad_norm"] if step.grad_clip is not None else [])  # by the step
    assert sorted(out) == sorted(losses + metrics + added)
    assert sorted(k for k in out if is_loss_key(k)) == sorted(losses + ["loss"])
    values = {k: float(v) for k, v in out.items()}
    assert all(math.isfinite(v) for v in values.values()), values
    assert all(values[k] > 0 for k in losses), values  # every term is really there
    total = math.fsum(values[k] for k in losses)
    assert values["loss"] == pytest.approx(total, rel=1e-5, abs=1e-6)
    for metric in metrics:  # a metric is logged, not summed (acc is a percentage > 0)
        assert values[metric] > 0
        assert values["loss"] != pytest.approx(total + values[metric], rel=1e-5)
