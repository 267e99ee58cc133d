"""Cross-entropy, softmax over K + 1 logits, sigmoid over K logits and per-pixel mask logits,
on written-out numbers."""

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from detcli.errors import ConfigError, DetError
from detcli.models.losses import CrossEntropyLoss, CrossEntropyLossConfig
from detcli.registry import LOSSES

LN2, LN3 = math.log(2), math.log(3)

# Softmax, K = 2 foreground classes + background column 2.
# Row 0: exp -> (1, 3, 1) / 5, label 1: -ln(3/5) = ln(5/3).
# Row 1: exp -> (2, 1, 1) / 4, label 2 (background): -ln(1/4) = ln 4.
SOFT_PRED = torch.tensor([[0.0, LN3, 0.0], [LN2, 0.0, 0.0]])
SOFT_LABELS = torch.tensor([1, 2])
SOFT_EXPECTED = [math.log(5 / 3), math.log(4)]

# Sigmoid, K = 2; label 2 is background.
# Row 0, label 0: class 0 t=1 p=3/4 -> ln 4/3; class 1 t=0 p=1/4 -> ln 4/3.
# Row 1, label 2: class 0 t=0 p=1/2 -> ln 2;   class 1 t=0 p=3/4 -> ln 4.
SIG_PRED = torch.tensor([[LN3, -LN3], [0.0, LN3]])
SIG_LABELS = torch.tensor([0, 2])
SIG_EXPECTED = [[math.log(4 / 3), math.log(4 / 3)], [LN2, 2 * LN2]]


def test_softmax_on_known_numbers():
    ce = CrossEntropyLoss()
    torch.testing.assert_close(ce(SOFT_PRED, SOFT_LABELS, reduction_override="none"),
                               torch.tensor(SOFT_EXPECTED))
    assert ce(SOFT_PRED, SOFT_LABELS).item() == pytest.approx(sum(SOFT_EXPECTED) / 2)
    assert ce(SOFT_PRED, SOFT_LABELS).item() == pytest.approx(F.cross_entropy(SOFT_PRED, SOFT_LABELS).item())
    assert ce(SOFT_PRED, SOFT_LABELS, avg_factor=4).item() == pytest.approx(sum(SOFT_EXPECTED) / 4)


def test_softmax_class_weight_and_sample_weight():
    ce = CrossEntropyLoss(class_weight=[1.0, 2.0, 0.5], reduction="sum")
    expected = 2.0 * SOFT_EXPECTED[0] + 0.5 * SOFT_EXPECTED[1]
    assert ce(SOFT_PRED, SOFT_LABELS).item() == pytest.approx(expected)
    weighted = ce(SOFT_PRED, SOFT_LABELS, weight=torch.tensor([0.0, 1.0]))
    assert weighted.item() == pytest.approx(0.5 * SOFT_EXPECTED[1])
    with pytest.raises(ConfigError, match="class_weight has 2 entries but the classifier has 3 logits"):
        CrossEntropyLoss(class_weight=[1.0, 2.0])(SOFT_PRED, SOFT_LABELS)


def test_softmax_ignore_index_and_avg_non_ignore():
    labels = torch.tensor([1, -100])
    plain = CrossEntropyLoss()(SOFT_PRED, labels)
    assert plain.item() == pytest.approx(SOFT_EXPECTED[0] / 2)  # MMDetection: ignored rows still count
    non_ignore = CrossEntropyLoss(avg_non_ignore=True)(SOFT_PRED, labels)
    assert non_ignore.item() == pytest.approx(SOFT_EXPECTED[0])


def test_sigmoid_on_known_numbers_with_background_label():
    bce = CrossEntropyLoss(use_sigmoid=True, reduction="none")
    torch.testing.assert_close(bce(SIG_PRED, SIG_LABELS), torch.tensor(SIG_EXPECTED))
    one_hot = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(bce(SIG_PRED, SIG_LABELS),
                               F.binary_cross_entropy_with_logits(SIG_PRED, one_hot, reduction="none"))
    mean = CrossEntropyLoss(use_sigmoid=True)(SIG_PRED, SIG_LABELS)
    assert mean.item() == pytest.approx((2 * math.log(4 / 3) + 3 * LN2) / 4)


def test_sigmoid_ignored_rows_and_class_weight_as_pos_weight():
    labels = torch.tensor([0, -100])
    bce = CrossEntropyLoss(use_sigmoid=True, reduction="sum")
    assert bce(SIG_PRED, labels).item() == pytest.approx(2 * math.log(4 / 3))
    avg = CrossEntropyLoss(use_sigmoid=True, avg_non_ignore=True)(SIG_PRED, labels)
    assert avg.item() == pytest.approx(2 * math.log(4 / 3) / 2)  # 1 valid row * K = 2 elements
    pos_weighted = CrossEntropyLoss(use_sigmoid=True, class_weight=[3.0, 5.0], reduction="sum")
    # only row 0 class 0 is positive: its term is multiplied by 3; negatives are unweighted
    expected = 3 * math.log(4 / 3) + math.log(4 / 3) + LN2 + 2 * LN2
    assert pos_weighted(SIG_PRED, SIG_LABELS).item() == pytest.approx(expected)


def test_empty_input_gives_zero_with_grad():
    for use_sigmoid, width in ((False, 3), (True, 2)):
        pred = torch.zeros(0, width, requires_grad=True)
        loss = CrossEntropyLoss(use_sigmoid=use_sigmoid, avg_non_ignore=True)(
            pred, torch.zeros(0, dtype=torch.long))
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()


def test_float32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CrossEntropyLoss()(SOFT_PRED.to(torch.bfloat16), SOFT_LABELS)
    assert loss.dtype == torch.float32


def test_config_builds_and_rejects_mask_with_sigmoid_or_class_weight():
    cfg = CrossEntropyLossConfig.model_validate({"use_sigmoid": True, "class_weight": False})
    loss = LOSSES.build(cfg)
    assert isinstance(loss, CrossEntropyLoss) and loss.use_sigmoid and loss.class_weight is None
    mask = LOSSES.build(CrossEntropyLossConfig(use_mask=True))
    assert mask.use_mask and not mask.use_sigmoid
    with pytest.raises(ValidationError, match="use_mask = true .* and use_sigmoid = true"):
        CrossEntropyLossConfig(use_mask=True, use_sigmoid=True)
    with pytest.raises(ValidationError, match="class_weight is not used with use_mask"):
        CrossEntropyLossConfig(use_mask=True, class_weight=[1.0, 2.0])
    with pytest.raises(ConfigError, match="two different losses"):
        CrossEntropyLoss(use_mask=True, use_sigmoid=True)


# Mask mode: 2 RoIs, K = 2 class channels, 1 x 2 pixels. Each RoI's loss reads its own label's
# channel only (the other channel holds values that would change the result).
# RoI 0, label 1: logits (0, ln 3), targets (1, 0): -ln(1/2) = ln 2, -ln(1 - 3/4) = ln 4.
# RoI 1, label 0: logits (ln 3, -ln 3), targets (1, 1): -ln(3/4) = ln 4/3, -ln(1/4) = ln 4.
MASK_PRED = torch.tensor([[[[9.0, -9.0]], [[0.0, LN3]]],
                          [[[LN3, -LN3]], [[-9.0, 9.0]]]])  # (2, 2, 1, 2)
MASK_TARGET = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])  # (2, 1, 2)
MASK_LABELS = torch.tensor([1, 0])
MASK_EXPECTED = [[[LN2, 2 * LN2]], [[math.log(4 / 3), 2 * LN2]]]


def test_mask_mode_reads_each_rois_class_channel():
    loss = CrossEntropyLoss(use_mask=True)
    expected = torch.tensor(MASK_EXPECTED)
    out = loss(MASK_PRED, MASK_TARGET, labels=MASK_LABELS, reduction_override="none")
    torch.testing.assert_close(out, expected)
    # MMDetection's mask_cross_entropy: the mean over every pixel of every RoI
    torch.testing.assert_close(loss(MASK_PRED, MASK_TARGET, labels=MASK_LABELS),
                               expected.mean())
    # uint8 targets (as the mask targets come) give the same loss
    torch.testing.assert_close(loss(MASK_PRED, MASK_TARGET.to(torch.uint8), labels=MASK_LABELS),
                               expected.mean())


def test_mask_mode_weights_padding_rois_out():
    """A padded RoI slot (weight 0) adds nothing; avg_factor = real RoIs x pixels gives the
    mean over the real ones, whatever the padding's logits."""
    loss = CrossEntropyLoss(use_mask=True, loss_weight=2.0)
    pred = torch.cat([MASK_PRED, torch.full((1, 2, 1, 2), 50.0)]).requires_grad_()
    target = torch.cat([MASK_TARGET, torch.zeros(1, 1, 2)])
    labels = torch.tensor([1, 0, 1])
    out = loss(pred, target, torch.tensor([1.0, 1.0, 0.0]), avg_factor=4.0, labels=labels)
    torch.testing.assert_close(out, 2.0 * torch.tensor(MASK_EXPECTED).mean())
    out.backward()
    assert pred.grad[2].abs().sum() == 0 and pred.grad[0, 1].abs().sum() > 0
    assert pred.grad[0, 0].abs().sum() == 0  # the other class channel gets no gradient


def test_mask_mode_class_agnostic_and_bad_shapes():
    loss = CrossEntropyLoss(use_mask=True)
    agnostic = MASK_PRED[:, 1:]  # (2, 1, 1, 2): one channel, no labels needed
    expected = F.binary_cross_entropy_with_logits(agnostic[:, 0], MASK_TARGET)
    torch.testing.assert_close(loss(agnostic, MASK_TARGET), expected)
    with pytest.raises(DetError, match="needs labels"):
        loss(MASK_PRED, MASK_TARGET)
    with pytest.raises(DetError, match=r"\(M, C, h, w\)"):
        loss(MASK_PRED[:, 0], MASK_TARGET)
