"""``det viz assign``'s RoI-head output for two-stage detectors: the sampling table per GT, the
cascade's table per stage, their plain (piped) forms, the summary lines and the pictures' paths."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.box import SIMPLE_HEAD
from rich.table import Table


def rcnn_table(rcnn) -> Table:
    """Rich table: one row per GT of the RoI sampling; yellow rows have no matching proposal."""
    table = Table(title=f"RoI head: {rcnn.assigner} + {rcnn.sampler} on "
                        f"{'jittered GT boxes' if rcnn.source == 'jitter' else 'RPN proposals'}",
                  title_justify="left", caption="yellow: no proposal matches the GT (only its "
                  "own box, added as a proposal)", caption_justify="left", box=SIMPLE_HEAD,
                  pad_edge=False)
    for name in ("#", "class", "proposals", "sampled pos", "GT sampled", "best IoU"):
        table.add_column(name, justify="left" if name == "class" else "right", no_wrap=True)
    for gt in rcnn.gts:
        table.add_row(str(gt.index), gt.class_name, str(gt.num_proposals),
                      str(gt.num_sampled_pos), "yes" if gt.gt_sampled else "no",
                      f"{gt.best_iou:.3f}", style="yellow" if gt.num_proposals == 0 else None)
    return table


def rcnn_plain_table(rcnn) -> str:
    lines = ["\t".join(["#", "class", "proposals", "sampled_pos", "gt_sampled", "best_iou",
                        "note"])]
    for gt in rcnn.gts:
        lines.append("\t".join([str(gt.index), gt.class_name, str(gt.num_proposals),
                                str(gt.num_sampled_pos), "yes" if gt.gt_sampled else "no",
                                f"{gt.best_iou:.3f}",
                                "no-matching-proposal" if gt.num_proposals == 0 else ""]))
    return "\n".join(lines)


def rcnn_summary(rcnn, picture) -> list[str]:
    c = rcnn.counts
    if rcnn.source == "jitter":
        source = (f"{rcnn.settings['jitter_per_gt']} jittered per GT + "
                  f"{rcnn.settings['background']} background")
    else:
        source = f"RPN of {rcnn.settings['checkpoint']}"
    budget = ("" if rcnn.sampler_num is None else
              f" (num {rcnn.sampler_num}, pos_fraction {rcnn.pos_fraction:g}: at most "
              f"{rcnn.max_pos} positives)")
    return [f"RoI proposals {c['proposals']} ({source}); candidates {c['candidates']} "
            f"(incl. {c['gt_added']} GT boxes)",
            f"sampled positives {c['sampled_positive']} of {c['assigned_positive']}, negatives "
            f"{c['sampled_negative']} of {c['assigned_negative']}{budget}; not sampled "
            f"{c['not_sampled']}",
            f"wrote {picture.path} ({picture.shape[1]}x{picture.shape[0]})"]


def _stage_cells(stage) -> list[str]:
    """One cascade stage's row (the rich and the plain table's cells)."""
    info, c, mean = stage.stage, stage.counts, stage.mean_positive_iou
    return [f"s{info.index}", "-" if info.pos_iou_thr is None else f"{info.pos_iou_thr:g}",
            info.input_legend, str(c["proposals"]), str(stage.positive_proposals),
            str(info.unrefined_positive), str(c["sampled_positive"]),
            str(c["sampled_negative"]), "-" if mean is None else f"{mean:.3f}",
            "/".join(str(n) for n in stage.positive_iou_histogram)]


STAGE_COLUMNS = ("stage", "IoU thr", "boxes", "proposals", "pos proposals", "unrefined pos",
                 "sampled pos", "sampled neg", "mean pos IoU", "pos IoU <.5/.5/.6/.7/.8/.9")


def stage_table(stages) -> Table:
    """Rich table: one row per cascade stage."""
    table = Table(title="Cascade stages: each samples the RoIs the one before refined",
                  title_justify="left", caption="unrefined pos: the stage-0 proposals this "
                  "stage's threshold makes positive; IoU of positive proposals (GT boxes left "
                  "out)", caption_justify="left", box=SIMPLE_HEAD, pad_edge=False)
    for name in STAGE_COLUMNS:
        table.add_column(name, justify="left" if name == "boxes" else "right", no_wrap=True)
    for stage in stages:
        table.add_row(*_stage_cells(stage))
    return table


def stage_plain_table(stages) -> str:
    header = ["stage", "pos_iou_thr", "boxes", "proposals", "positive_proposals",
              "unrefined_positive", "sampled_pos", "sampled_neg", "mean_pos_iou",
              "pos_iou_histogram"]
    return "\n".join(["\t".join(header)] + ["\t".join(_stage_cells(s)) for s in stages])


def stage_notes(rcnn_stages) -> list[str]:
    """Under the stage table: how the later stages' boxes were made, and their pictures."""
    refinement = rcnn_stages[-1][0].stage.refinement
    if refinement["source"] == "toward_gt":
        lines = [f"stages after s0 sample the previous stage's RoIs with each positive moved "
                 f"{refinement['fraction']:g} of the way to its GT: a stand-in for a trained "
                 "head's regression (an untrained head's would be noise); --checkpoint uses "
                 "the model's"]
    else:
        lines = ["stages after s0 sample the previous stage's RoIs as its box head regressed "
                 "them"]
    return lines + [f"wrote {picture.path} ({picture.shape[1]}x{picture.shape[0]})"
                    for _, picture in rcnn_stages[1:]]


def rcnn_path(out: Path, stage: Optional[int] = None) -> Path:
    """Where the RoI picture goes: next to ``out``, ``<stem>_rcnn<suffix>``; a cascade's stage
    t: ``<stem>_rcnn_s<t><suffix>``."""
    tail = "" if stage is None else f"_s{stage}"
    return out.with_name(f"{out.stem}_rcnn{tail}{out.suffix}")
