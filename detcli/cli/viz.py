"""``det viz``: pictures of what the detector's data and targets look like.

``det viz assign`` draws which priors the configured assigner makes positive, negative or
ignored for one image's GT boxes, and prints a table per GT (RTMDet: and its dynamic
assigner's candidates, dynamic k and soft labels, cli/assign_costs.py); for a two-stage
detector these are the RPN's anchors, and a second picture and table show the RoI head's
sampling of proposals (jittered GT boxes, or a checkpoint's RPN proposals). ``det viz dataset`` draws a dataset's
images after its training pipeline with their GT boxes.

Exit status: 0 done; 1 a bad option value (``--levels``, ``--out``, an RoI option for a
single-stage config); 2 a config problem; 3 an image, annotation file or ``--box`` that cannot
be used; 4 a checkpoint that does not fit the config.
"""

from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, Sequence

import typer
from rich.box import SIMPLE_HEAD
from rich.table import Table

from detcli.cli.common import (
    DebugOpt,
    DetCommand,
    DetGroup,
    DeviceOpt,
    JsonOpt,
    SetOpt,
    console,
    examples,
    guarded,
    load,
    plural,
    print_json,
    shown_default,
)
from detcli.cli.viz_attention import ATTENTION_EXAMPLES, attention
from detcli.cli.viz_rcnn import (
    rcnn_path,
    rcnn_plain_table,
    rcnn_summary,
    rcnn_table,
    stage_notes,
    stage_plain_table,
    stage_table,
)

if TYPE_CHECKING:
    from detcli.analysis.assign_view import OriginalGT
    from detcli.config.root import DetConfig

app = typer.Typer(cls=DetGroup, help="Draw assignments, deformable attention and dataset samples.",
                  no_args_is_help=True)
app.command("attention", cls=DetCommand, epilog=ATTENTION_EXAMPLES)(attention)  # viz_attention.py


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


def parse_levels(text: Optional[str], num_levels: int) -> Optional[list[int]]:
    """``"0,2"`` -> [0, 2]; None -> None (every level). DetError naming the valid levels."""
    from detcli.errors import DetError

    if text is None:
        return None
    valid = f"the anchor generator has {num_levels} levels (0 to {num_levels - 1})"
    try:
        levels = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DetError(f"--levels {text!r}: expected comma-separated level numbers; {valid}") from None
    bad = [v for v in levels if not 0 <= v < num_levels]
    if bad or not levels:
        raise DetError(f"--levels {text!r}: no level {bad[0] if bad else '(none given)'}; {valid}")
    return sorted(set(levels))


# -- --box and --ann ---------------------------------------------------------------------------

BOX_FORMAT = "x1,y1,x2,y2[,label] in original-image pixels (label: a class index or name)"


def resolve_label(token: str, class_names: Sequence[str], num_classes: int) -> int:
    """A class index in [0, K) or a class name -> the label; DataError naming the choices."""
    from detcli.errors import DataError
    from detcli.registry import suggest

    token = token.strip()
    if token.lstrip("-").isdigit():
        label = int(token)
        if not 0 <= label < num_classes:
            raise DataError(f"label {label} is not a class index: the model has {num_classes} "
                            f"classes (0 to {num_classes - 1})")
        return label
    if token in class_names:
        return list(class_names).index(token)
    if not class_names:
        raise DataError(f"label {token!r}: no class names are known (the config's datasets set no "
                        "`classes` and their annotation files cannot be read); use a class index "
                        f"from 0 to {num_classes - 1}")
    hint = suggest(token, list(class_names))
    raise DataError(f"label {token!r} is not a class name; classes: {', '.join(class_names)}"
                    + (f". Did you mean {hint!r}?" if hint else ""))


def parse_box(text: str, class_names: Sequence[str], num_classes: int) -> tuple[list[float], int]:
    """``"x1,y1,x2,y2[,label]"`` -> (box, label); label 0 when omitted. DataError when malformed."""
    from detcli.errors import DataError

    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (4, 5):
        raise DataError(f"--box {text!r}: expected {BOX_FORMAT}; got {len(parts)} fields")
    try:
        box = [float(v) for v in parts[:4]]
    except ValueError:
        raise DataError(f"--box {text!r}: the first four fields must be numbers ({BOX_FORMAT})") \
            from None
    if not all(math.isfinite(v) for v in box):
        raise DataError(f"--box {text!r}: coordinates must be finite numbers")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(f"--box {text!r}: needs x2 > x1 and y2 > y1 (corners, not x,y,w,h)")
    label = resolve_label(parts[4], class_names, num_classes) if len(parts) == 5 else 0
    return box, label


def gt_from_boxes(texts: Sequence[str], class_names: Sequence[str], num_classes: int) -> OriginalGT:
    """``--box`` options -> the image's GT (no ignore boxes)."""
    from detcli.analysis.assign_view import OriginalGT

    parsed = [parse_box(t, class_names, num_classes) for t in texts]
    return OriginalGT.from_boxes([b for b, _ in parsed], [lab for _, lab in parsed], class_names)


def read_gt(cfg: DetConfig, image: Path, ann: Optional[Path], boxes: Sequence[str]) -> OriginalGT:
    """The GT ``det viz assign`` draws: ``--ann``'s entry for the image, or the ``--box``
    options with labels by the config's class names; DetError for both or neither."""
    from detcli.analysis.assign_view import annotation_gt, config_class_names
    from detcli.errors import DetError
    from detcli.models.introspect import config_num_classes

    if ann is not None and boxes:
        raise DetError("give GT boxes either with --ann or with --box, not both")
    if ann is not None:
        return annotation_gt(cfg, ann, image)
    if boxes:
        return gt_from_boxes(boxes, config_class_names(cfg), config_num_classes(cfg.model) or 0)
    raise DetError("no GT boxes: give --ann COCO_JSON or --box x1,y1,x2,y2[,label]")


def _gt_table(view) -> Table:
    """Rich table: one row per GT; red rows have no positive, yellow ones only low-quality
    matches (IoU under the positive threshold, from the assigner's "each GT claims its best
    priors" step)."""
    levels = [f"L{k}" for k in range(len(view.strides))]
    rpn = "" if view.head_key == "model.bbox_head" else "RPN (every GT an object): "
    table = Table(title=f"{rpn}{view.assigner} + {view.sampler} on {view.filename} "
                        f"(input {view.pad_shape[1]}x{view.pad_shape[0]})", title_justify="left",
                  caption="red: no positive prior; yellow: low-quality matches only",
                  caption_justify="left", box=SIMPLE_HEAD, pad_edge=False)
    for name in ("#", "class", "w x h", "best IoU", "best L", *levels, "pos"):
        table.add_column(name, justify="left" if name == "class" else "right", no_wrap=True)
    for gt in view.gts:
        style = "red" if gt.num_pos == 0 else "yellow" if gt.low_quality_only else None
        table.add_row(str(gt.index), gt.class_name, f"{gt.width:.0f}x{gt.height:.0f}",
                      f"{gt.best_iou:.3f}", str(gt.best_level),
                      *(str(n) for n in gt.num_pos_per_level), str(gt.num_pos), style=style)
    return table


def _plain_table(view) -> str:
    levels = [f"L{k}" for k in range(len(view.strides))]
    header = ["#", "class", "w_x_h", "best_iou", "best_level", *levels, "positives", "note"]
    lines = ["\t".join(header)]
    for gt in view.gts:
        note = ("NO POSITIVES" if gt.num_pos == 0 else
                "low-quality-only" if gt.low_quality_only else "")
        lines.append("\t".join([str(gt.index), gt.class_name, f"{gt.width:.0f}x{gt.height:.0f}",
                                f"{gt.best_iou:.3f}", str(gt.best_level),
                                *(str(n) for n in gt.num_pos_per_level), str(gt.num_pos), note]))
    return "\n".join(lines)


def _summary(view, picture) -> list[str]:
    c = view.counts
    per_level = ", ".join(f"L{r['level']} {r['positive']}" for r in view.per_level())
    lines = [f"positives {c['positive']} ({per_level}); ignored {c['ignored']}; "
             f"negatives {c['assigned_negative']} (sampled {c['negative']})"]
    zero = view.zero_positive
    if zero:
        ids = ", ".join(f"#{i}" for i in zero)
        lines.append(f"[red]{plural(len(zero), 'GT box', 'GT boxes')} with no positive "
                     f"prior: {ids}[/]")
    lines.append(f"wrote {picture.path} ({picture.shape[1]}x{picture.shape[0]})")
    return lines


@app.command(cls=DetCommand, epilog=examples(
    "det viz assign data/synth/val/000003.jpg -c retinanet_tiny_synth "
    "--ann data/synth/annotations/val.json",
    "det viz assign photo.jpg -c my.toml --box 10,20,60,90,circle --levels 0,1"))
@guarded
def assign(
    image: Annotated[Path, typer.Argument(help="An image file (any format OpenCV reads).",
                                          show_default=False)],
    config: Annotated[Path, typer.Option("--config", "-c", help="A config file (TOML) or a preset name.",
                                         show_default=False)],
    ann: Annotated[Optional[Path], typer.Option(
        "--ann", help="A COCO JSON file; the GT of the image with the same file name is used.",
        show_default=False)] = None,
    box: Annotated[Optional[list[str]], typer.Option(
        "--box", metavar="x1,y1,x2,y2[,label]",
        help="A GT box in original-image pixels; label is a class index or name (default 0). "
             "Repeatable.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Where to write the picture " + shown_default("<image stem>_assign.png"),
        show_default=False)] = None,
    levels: Annotated[Optional[str], typer.Option(
        "--levels", metavar="0,1", help="FPN levels to give a panel each " + shown_default("all"),
        show_default=False)] = None,
    show_negatives: Annotated[bool, typer.Option(
        "--show-negatives", help="Draw the sampled negatives' centres as dots (level panels).")] = False,
    train_pipeline: Annotated[bool, typer.Option(
        "--train-pipeline", help="Prepare the image with the training pipeline (random flips "
                                 "and crops, seeded) instead of the test pipeline.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the training pipeline, the samplers and "
                                           "the jittered proposals.")] = 0,
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="Two-stage: sample the model's own RPN proposals (a .pth of this "
        "config) instead of jittered GT boxes. DETR: match its own queries, not "
        "stand-ins. RTMDet: rank the points by the model's "
        "predictions instead of the stand-in's.", show_default=False)] = None,
    jitter: Annotated[Optional[int], typer.Option(
        "--jitter", min=0, help="Two-stage: jittered proposals per GT, IoU spread over "
        "0.1-0.95 " + shown_default("16"), show_default=False)] = None,
    background: Annotated[Optional[int], typer.Option(
        "--background", min=0, help="Two-stage: random background proposals " + shown_default("64"),
        show_default=False)] = None,
    show_unsampled: Annotated[bool, typer.Option(
        "--show-unsampled", help="Two-stage: draw the proposals left out of the RoI sample "
                                 "faintly.")] = False,
    layers: Annotated[bool, typer.Option(
        "--layers", help="Query-based (DETR): a panel per decoder layer, where the matched "
                         "query's box was (needs --checkpoint).")] = False,
    dn_groups: Annotated[Optional[int], typer.Option(
        "--dn-groups", min=1, help="DINO: how many denoising groups to draw and tabulate "
        + shown_default("2") + "; --json has all.", show_default=False)] = None,
    device: DeviceOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Draw the positive, negative and ignored priors of IMAGE's GT boxes; table per GT.

    A query-based detector (DETR) shows its Hungarian matching instead: each GT with its
    matched query's box, the weighted match costs and their total, the IoU (--layers: per
    decoder layer); without --checkpoint on seeded stand-in queries, as the output says.
    DINO adds its denoising queries: per GT its positive and negative copies in each group
    (noised box, label, noise), the box each predicts and the attention mask as counts.

    Runs the config's test pipeline (or --train-pipeline), prior generator, assigner and
    sampler on the GT boxes of --ann or --box, writes the picture to --out, and prints per GT
    its size, best IoU and positives per level; GT boxes without positives are flagged.
    A two-stage config shows its RPN's anchors, and its RoI head's sampling of proposals in a
    second picture, <out stem>_rcnn.png, and table; a Cascade R-CNN one picture per stage,
    <out stem>_rcnn_s0.png, _s1, ..., and a table of the stages.
    """
    from detcli.errors import DetError
    from detcli.viz.draw import save_image
    from detcli.analysis.capabilities import num_queries
    from detcli.cli.viz_query import assign_queries
    from detcli.analysis.capabilities import is_two_stage, ranks_by_predictions
    from detcli.analysis.checkpoint_predictions import checkpoint_predictions
    from detcli.cli.assign_costs import print_costs
    from detcli.analysis.proposals import BACKGROUND, JITTER_PER_GT
    from detcli.analysis.roi_sampling import visualize_roi_stages
    from detcli.analysis.assign_report import AssignReport, PictureFile
    from detcli.analysis.assign_view import assignment_parts, pipeline_of, visualize_assignment
    from detcli.viz.assign_picture import draw_assignment
    from detcli.viz.roi_picture import draw_roi_sampling

    cfg = load(config, overrides).cfg
    if num_queries(cfg.model) is not None:  # no priors: the matching (cli/viz_query.py)
        unused = [name for name, given in (("--levels", levels), ("--jitter", jitter),
                                           ("--background", background),
                                           ("--show-negatives", show_negatives or None),
                                           ("--show-unsampled", show_unsampled or None))
                  if given is not None]
        assign_queries(cfg, image, read_gt(cfg, image, ann, box or ()), out=out, layers=layers,
                       train_pipeline=train_pipeline, seed=seed, checkpoint=checkpoint,
                       device=device, as_json=as_json, unused=unused, dn_groups=dn_groups)
        return
    if layers:
        raise DetError(f"--layers: {config} configures a {cfg.model.type}, whose priors have "
                       "no decoder layers; --layers applies to query-based detectors (DETR)")
    if dn_groups is not None:
        raise DetError(f"--dn-groups: {config} configures a {cfg.model.type}, which has no "
                       "denoising queries; --dn-groups applies to DINO")
    two_stage = is_two_stage(cfg.model)
    ranked = ranks_by_predictions(cfg.model)  # RTMDet: --checkpoint gives its predictions
    if not two_stage:
        given = [name for name, v in (("--checkpoint", None if ranked else checkpoint),
                                      ("--jitter", jitter),
                                      ("--background", background)) if v is not None]
        given += ["--show-unsampled"] if show_unsampled else []
        if given:
            raise DetError(f"{', '.join(given)}: RoI sampling options apply to two-stage "
                           f"detectors, and {config} configures a {cfg.model.type}")
    if checkpoint is not None and jitter is not None:
        raise DetError("--jitter makes proposals from the GT boxes, --checkpoint takes the RPN's: "
                       "give one of them")
    parts = assignment_parts(cfg)
    gt = read_gt(cfg, image, ann, box or ())
    predictions = None if not (ranked and checkpoint) else checkpoint_predictions(
        cfg, checkpoint, pipeline_of(cfg, train_pipeline), gt.class_names, device)
    view = visualize_assignment(cfg, image, gt, train_pipeline=train_pipeline, seed=seed,
                                parts=parts, predictions=predictions)
    chosen = parse_levels(levels, len(view.strides))
    rcnn_stages = []
    if two_stage:
        rcnn_stages = visualize_roi_stages(
            cfg, view, pipeline_of(cfg, train_pipeline), checkpoint=checkpoint,
            jitter=JITTER_PER_GT if jitter is None else jitter,
            background=BACKGROUND if background is None else background, seed=seed,
            device=device)
    picture = draw_assignment(view, chosen, show_negatives=show_negatives)
    out = out if out is not None else Path(f"{image.stem}_assign.png")
    save_image(out, picture)
    report = AssignReport(view, PictureFile(out, picture.shape[:2]))
    for t, stage in enumerate(rcnn_stages):
        rcnn_picture = draw_roi_sampling(stage, show_unsampled=show_unsampled)
        path = rcnn_path(out, None if len(rcnn_stages) == 1 else t)
        report.add_rcnn_stage(stage, PictureFile(save_image(path, rcnn_picture),
                                                 rcnn_picture.shape[:2]))
    if as_json:
        print_json(report.to_dict())
        return
    if console.is_terminal:
        console.print(_gt_table(view))
    else:
        sys.stdout.write(_plain_table(view) + "\n")  # tab-separated: rich would expand tabs
    for line in _summary(view, report.picture):
        console.print(line, highlight=False)
    print_costs(view)  # the dynamic soft-label assigner's (RTMDet)
    rcnn = report.rcnn
    if rcnn is None or report.rcnn_picture is None:
        return
    if console.is_terminal:
        console.print(rcnn_table(rcnn))
    else:
        sys.stdout.write("\n" + rcnn_plain_table(rcnn) + "\n")
    for line in rcnn_summary(rcnn, report.rcnn_picture):
        console.print(line, highlight=False)
    if len(report.rcnn_stages) < 2:
        return
    stages = [stage for stage, _ in report.rcnn_stages]
    if console.is_terminal:
        console.print(stage_table(stages))
    else:
        sys.stdout.write("\n" + stage_plain_table(stages) + "\n")
    for line in stage_notes(report.rcnn_stages):
        console.print(line, highlight=False)


@app.command(cls=DetCommand, epilog=examples(
    "det viz dataset retinanet_tiny_synth --num 8 --grid",
    "det viz dataset my.toml --split val --out viz/"))
@guarded
def dataset(
    config: Annotated[Path, typer.Argument(help="A config file (TOML) or a preset name.", show_default=False)],
    split: Annotated[Split, typer.Option(help="Which dataset of the config to draw.")] = Split.train,
    num: Annotated[int, typer.Option("--num", "-n", help="How many images (drawn at random "
                                     "with --seed).")] = 8,
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Folder to write the PNGs to.")] = Path("viz_dataset"),
    seed: Annotated[int, typer.Option(help="Seed of the image choice and the augmentations.")] = 0,
    grid: Annotated[bool, typer.Option("--grid",
                                       help="One grid.png instead of one PNG per image.")] = False,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Draw GT boxes on a dataset's images after its pipeline (augmentations applied).

    To check a dataset and its pipeline before training: N images of the split, drawn with
    --seed, one PNG each in --out (or one grid.png with --grid).
    """
    from detcli.viz.dataset import DatasetPictures, sample_dataset, write_samples

    cfg = load(config, overrides).cfg
    samples = sample_dataset(cfg, split.value, num=num, seed=seed)
    paths = write_samples(samples, out, grid=grid)
    if as_json:
        print_json(DatasetPictures(split.value, samples, paths, grid).to_dict())
        return
    for sample, path in zip(samples, paths if not grid else [None] * len(samples)):
        boxes = len(sample.view.gt_boxes)
        where = f" -> {path}" if path is not None else ""
        console.print(f"{sample.title}: {plural(boxes, 'box', 'boxes')}{where}", highlight=False,
                      markup=False)
    if grid:
        console.print(f"wrote {paths[0]}", highlight=False, markup=False)
