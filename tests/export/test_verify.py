"""The export check's verdict on hand-made detections: matched, different, borderline, and a
check that compared nothing (fails unless allowed)."""

from __future__ import annotations

import pytest
import torch

from detcli.errors import ExportError
from detcli.export.verify import Tolerance, VerifyReport, compare_masks, match_image
from detcli.structures.detections import Detections


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    """Detections from (x1, y1, x2, y2, score, label) rows."""
    data = torch.tensor([r[:5] for r in rows], dtype=torch.float32).reshape(-1, 5)
    labels = torch.tensor([r[5] for r in rows], dtype=torch.long)
    return Detections(boxes=data[:, :4], scores=data[:, 4], labels=labels)


def compare(reference: Detections, exported: Detections, **report_kwargs) -> VerifyReport:
    report = VerifyReport(tolerance=Tolerance(), **report_kwargs)
    report.shapes.append((1, 3, 64, 64))
    match_image(reference, exported, report.tolerance, 0.05, "image 0", report)
    return report


def test_matched_detections_pass_with_their_differences():
    report = compare(dets((0, 0, 10, 10, 0.9, 1)), dets((0.01, 0, 10, 10.02, 0.9004, 1)))
    assert report.ok and report.num_matched == 1 and not report.compared_nothing
    assert report.max_box_diff == pytest.approx(0.02, abs=1e-6)
    assert report.max_score_diff == pytest.approx(4e-4, abs=1e-6)
    assert report.lines()[-1] == "kept detections match"
    report.raise_if_failed()


def test_a_check_that_compared_nothing_fails_unless_allowed():
    report = compare(dets(), dets())
    assert report.compared_nothing and not report.ok
    assert report.lines()[-1] == ("nothing compared: neither side kept a detection, so the check "
                                  "proves nothing")
    with pytest.raises(ExportError, match="compared nothing: PyTorch and onnxruntime kept no "
                                          "detection on the 1 verification image"):
        report.raise_if_failed()
    allowed = compare(dets(), dets(), allow_empty=True)
    assert allowed.ok and allowed.lines()[-1].startswith("no detections to compare")
    allowed.raise_if_failed()


def test_only_borderline_detections_compare_nothing_too():
    report = compare(dets((0, 0, 10, 10, 0.0505, 0)), dets())  # within 1e-3 of score_thr 0.05
    assert report.num_borderline == 1 and not report.mismatches
    assert report.compared_nothing and not report.ok


def test_a_difference_fails_even_when_empty_outputs_are_allowed():
    report = compare(dets((0, 0, 10, 10, 0.9, 1)), dets(), allow_empty=True)
    assert not report.ok and report.mismatches == [
        "image 0: PyTorch detection label 1 score 0.9000 box [0.0, 0.0, 10.0, 10.0] has no ONNX "
        "counterpart"]
    with pytest.raises(ExportError, match="disagrees with PyTorch beyond tolerance"):
        report.raise_if_failed()


def test_mask_probabilities_of_matched_pairs_are_compared():
    report = VerifyReport(tolerance=Tolerance(mask=1e-3))
    reference = torch.zeros(2, 4, 4)
    exported = torch.zeros(2, 4, 4)
    exported[0, 1, 2] = 5e-4  # within the tolerance
    exported[1, 3, 3] = 0.25  # beyond it
    compare_masks(reference, exported, [(0, 0)], report.tolerance, "image 0", report)
    assert report.num_masks_compared == 1
    assert not report.mismatches and report.max_mask_diff == pytest.approx(5e-4)
    compare_masks(reference, exported, [(1, 1)], report.tolerance, "image 0", report)
    assert report.num_masks_compared == 2 and report.max_mask_diff == pytest.approx(0.25)
    assert report.mismatches == ["image 0: the mask of PyTorch detection 1 differs from its "
                                 "ONNX counterpart's by 0.25 (tolerance 0.001)"]
