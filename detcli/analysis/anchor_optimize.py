"""``det analyze anchors --optimize``: search AnchorGenerator's scales and ratios for a dataset.

T GT boxes, P ratios, S scales per location, L levels, M = L * S * P anchor shapes, D search
dimensions (1 or S scale coordinates, then P ratio coordinates). Sizes are network-input pixels.

What is searched and what is kept: ``octave_base_scale`` (or each of ``scales``) and
``ratios``; ``scales_per_octave``, the number of ratios, ``strides`` and ``base_sizes`` stay,
so the head keeps its A = S * P anchors per location and its layer shapes. The generator is
the one the analysis assigns with: ``model.bbox_head.anchor_generator``, or a two-stage
detector's ``model.rpn_head.anchor_generator``; the snippet and the ``--set`` lines name it.

1. Seed: k-means with IoU distance (1 - IoU of (w, h) boxes sharing a centre, as YOLO's anchor
   clustering) over the GT shapes scaled to unit area gives P aspect ratios; then, on a grid of
   1/16 octave, the scale that maximises the GTs' mean best IoU with the anchors centred on
   the grid point nearest to each GT (every level; a cheap stand-in for the assigner) places
   the sizes.
2. Search: compass search (coordinate steps in log2 units, halved when no step improves) from
   the better of the configured and the seeded design, on the real objective: the configured
   assigner on the real anchor grids of every image. ``coverage`` (the default) ranks by the
   share of GTs with at least one positive, then mean best IoU; ``mean-iou`` the other way.

Everything is deterministic (fixed k-means seed, fixed step order); candidates are rounded to
3 decimals before they are scored, so the reported result is exactly the snippet's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import numpy as np

from detcli.analysis.anchor_analysis import AnchorReport, AnchorStudy, GTStats
from detcli.config.emit import to_toml, value
from detcli.errors import ConfigError
from detcli.registry import PRIOR_GENERATORS
from detcli.task.prior_generators.anchor_generator import octave_scales

log = logging.getLogger(__name__)

Objective = Literal["coverage", "mean-iou"]
CONFIG_KEY = "model.bbox_head.anchor_generator"  # a single-stage detector's; see AnchorStudy
DIGITS = 3
RATIO_LIMIT = 4.0  # log2 bounds of a ratio: 1/16 .. 16
SAMPLE = 4000  # GT shapes used by the seeding steps


def shape_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """IoU of (n, 2) and (m, 2) (w, h) boxes sharing a centre -> (n, m)."""
    inter = (np.minimum(wh_a[:, None, 0], wh_b[None, :, 0])
             * np.minimum(wh_a[:, None, 1], wh_b[None, :, 1]))  # (n, m)
    area_a = wh_a[:, 0] * wh_a[:, 1]  # (n,)
    area_b = wh_b[:, 0] * wh_b[:, 1]  # (m,)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def kmeans_iou(wh: np.ndarray, k: int, iters: int = 100, seed: int = 0) -> np.ndarray:
    """k-means over (n, 2) shapes with distance 1 - IoU: k-means++ start (seeded), centres
    are medians -> (k, 2) centres, sorted by h / w."""
    rng = np.random.default_rng(seed)
    centres = wh[[int(rng.integers(len(wh)))]]  # (1, 2)
    while len(centres) < k:
        dist = 1 - shape_iou(wh, centres).max(axis=1)  # (n,)
        weights = dist ** 2
        total = weights.sum()
        pick = int(rng.choice(len(wh), p=weights / total)) if total > 0 else int(rng.integers(len(wh)))
        centres = np.concatenate([centres, wh[pick:pick + 1]])  # (c + 1, 2)
    for _ in range(iters):
        owner = shape_iou(wh, centres).argmax(axis=1)  # (n,)
        moved = np.array([np.median(wh[owner == c], axis=0) if (owner == c).any() else centres[c]
                          for c in range(k)])  # (k, 2)
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres[np.argsort(centres[:, 1] / centres[:, 0])]


@dataclass(frozen=True)
class AnchorParams:
    """The searched part of an AnchorGenerator config."""

    ratios: tuple[float, ...]
    octave_base_scale: Optional[float] = None
    scales_per_octave: Optional[int] = None
    scales: Optional[tuple[float, ...]] = None

    @classmethod
    def from_config(cls, cfg: Any, key: str = CONFIG_KEY) -> AnchorParams:
        """The searched values of ``cfg``, the generator config at ``key``."""
        if cfg.type != "AnchorGenerator":
            raise ConfigError(f"--optimize searches AnchorGenerator settings; {key} is "
                              f"{cfg.type}")
        return cls(tuple(cfg.ratios), cfg.octave_base_scale, cfg.scales_per_octave,
                   tuple(cfg.scales) if cfg.scales is not None else None)

    @property
    def scale_list(self) -> list[float]:
        if self.scales is not None:
            return list(self.scales)
        return octave_scales(self.octave_base_scale, self.scales_per_octave)  # type: ignore[arg-type]

    def vector(self) -> np.ndarray:
        """(D,) log2 coordinates: the scale(s), then the ratios."""
        scales = self.scales if self.scales is not None else (self.octave_base_scale,)
        return np.log2(np.array([*scales, *self.ratios], dtype=np.float64))

    def with_vector(self, x: np.ndarray) -> AnchorParams:
        """Parameters at (D,) log2 coordinates, rounded to ``DIGITS`` decimals."""
        values = [round(float(v), DIGITS) for v in np.exp2(x)]
        num_scales = len(self.scales) if self.scales is not None else 1
        scales, ratios = values[:num_scales], tuple(values[num_scales:])
        if self.scales is not None:
            return AnchorParams(ratios, scales=tuple(scales))
        return AnchorParams(ratios, scales[0], self.scales_per_octave)

    def config(self, base: Any) -> Any:
        """``base`` (an AnchorGeneratorConfig) with these values."""
        return base.model_copy(update={"ratios": list(self.ratios),
                                       "octave_base_scale": self.octave_base_scale,
                                       "scales_per_octave": self.scales_per_octave,
                                       "scales": list(self.scales) if self.scales else None})

    def set_args(self, key: str = CONFIG_KEY) -> list[str]:
        """``--set`` overrides that apply these values to the generator at ``key``."""
        pairs = [("ratios", list(self.ratios))]
        pairs += ([("scales", list(self.scales))] if self.scales is not None
                  else [("octave_base_scale", self.octave_base_scale)])
        return [f"{key}.{name}={value(v)}" for name, v in pairs]


def _parts_for(study: AnchorStudy, params: AnchorParams) -> Any:
    cfg = params.config(study.parts.anchor_cfg)
    return study.parts.with_prior_generator(PRIOR_GENERATORS.build(cfg), cfg)


def grid_best_iou(boxes: np.ndarray, generator: Any) -> np.ndarray:
    """(T,) best IoU of each (T, 4) box with the anchors of ``generator`` centred on the grid
    point nearest to the box centre, on every level: the seeding proxy (no assigner)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (T, 2)
    best = np.zeros(len(boxes))
    for (stride_w, stride_h), base in zip(generator.strides, generator.base_anchors):
        stride = np.array([stride_w, stride_h], dtype=np.float64)  # (2,)
        anchors = base.double().numpy()  # (A, 4) centred on the first grid point
        origin = (anchors[:, :2] + anchors[:, 2:]).mean(axis=0) / 2  # (2,)
        shift = np.round((centre - origin) / stride).clip(min=0) * stride  # (T, 2)
        placed = anchors[None, :, :] + np.tile(shift, 2)[:, None, :]  # (T, A, 4)
        lt = np.maximum(placed[..., :2], boxes[:, None, :2])  # (T, A, 2)
        rb = np.minimum(placed[..., 2:], boxes[:, None, 2:])  # (T, A, 2)
        inter = (rb - lt).clip(min=0).prod(axis=-1)  # (T, A)
        area_a = (anchors[:, 2:] - anchors[:, :2]).prod(axis=-1)  # (A,)
        area_b = (boxes[:, 2:] - boxes[:, :2]).prod(axis=-1)  # (T,)
        iou = inter / np.maximum(area_a[None, :] + area_b[:, None] - inter, 1e-6)  # (T, A)
        best = np.maximum(best, iou.max(axis=1))
    return best


def seed_params(study: AnchorStudy, start: AnchorParams) -> tuple[AnchorParams, np.ndarray]:
    """Step 1 of the module docstring -> (seeded params, the k-means ratio centres (P, 2))."""
    boxes = study.gts.boxes.astype(np.float64)  # (T, 4)
    boxes = boxes[((boxes[:, 2:] - boxes[:, :2]) > 0).all(axis=1)]
    boxes = boxes[np.linspace(0, len(boxes) - 1, min(len(boxes), SAMPLE)).astype(np.int64)]  # (n, 4)
    wh = boxes[:, 2:] - boxes[:, :2]  # (n, 2)
    unit = wh / np.sqrt(wh.prod(axis=1, keepdims=True))  # (n, 2) same shapes, area 1
    centres = kmeans_iou(unit, len(start.ratios))  # (P, 2)
    ratios = centres[:, 1] / centres[:, 0]  # (P,) h / w
    rel = np.array(start.scale_list) / start.scale_list[0]  # (S,) the spacing is kept
    best_x, best_score = start.vector(), -1.0
    for log_scale in np.arange(-3.0, 6.0, 1 / 16):
        x = np.log2([*(rel * 2.0 ** log_scale if start.scales is not None else [2.0 ** log_scale]),
                     *ratios])  # (D,)
        cfg = start.with_vector(x).config(study.parts.anchor_cfg)
        score = float(grid_best_iou(boxes, PRIOR_GENERATORS.build(cfg)).mean())
        if score > best_score:
            best_x, best_score = x, score
    return start.with_vector(best_x), centres


def score(stats: GTStats, objective: Objective) -> tuple[float, float]:
    """What the search maximises, compared lexicographically."""
    if objective == "mean-iou":
        return (round(stats.mean_best_iou, 6), stats.coverage)
    return (stats.coverage, round(stats.mean_best_iou, 6))


@dataclass
class OptimizeResult:
    objective: str
    before: AnchorReport
    after: AnchorReport
    params_before: AnchorParams
    params_seed: AnchorParams
    params_after: AnchorParams
    score_before: tuple[float, float]
    score_seed: tuple[float, float]
    score_after: tuple[float, float]
    kmeans_ratio_centres: np.ndarray  # (P, 2) unit-area shapes
    evaluations: int
    seconds: float
    anchor_cfg: Any  # the configured AnchorGeneratorConfig
    config_key: str = CONFIG_KEY  # where it sits: model.bbox_head / model.rpn_head.anchor_generator

    def toml(self) -> str:
        """The ``[<config_key>]`` table (e.g. ``[model.rpn_head.anchor_generator]``) to paste
        into a config."""
        table = self.params_after.config(self.anchor_cfg).model_dump(mode="json", exclude_none=True)
        tree: dict[str, Any] = table
        for name in reversed(self.config_key.split(".")):
            tree = {name: tree}
        return to_toml(tree, header=f"det analyze anchors --optimize (objective {self.objective})")

    def set_args(self) -> list[str]:
        """``--set`` overrides that apply the optimised values to the config."""
        return self.params_after.set_args(self.config_key)

    def to_dict(self, before_report: bool = True) -> dict[str, Any]:
        """The search as JSON data; ``before_report=False`` leaves out the report of the
        configured design (``det analyze anchors`` has it at the top level already)."""
        def params(p: AnchorParams, s: tuple[float, float]) -> dict[str, Any]:
            return {"ratios": list(p.ratios), "octave_base_scale": p.octave_base_scale,
                    "scales_per_octave": p.scales_per_octave,
                    "scales": list(p.scales) if p.scales else None, "score": list(s)}

        data = {
            "objective": self.objective, "evaluations": self.evaluations,
            "seconds": round(self.seconds, 2),
            "before": params(self.params_before, self.score_before),
            "after": params(self.params_after, self.score_after),
            "seed": params(self.params_seed, self.score_seed),
            "kmeans_ratio_centres": [[round(float(v), 4) for v in c] for c in self.kmeans_ratio_centres],
            "toml": self.toml(), "set": self.set_args(),
            "before_report": self.before.to_dict(), "after_report": self.after.to_dict(),
        }
        if not before_report:
            del data["before_report"]
        return data


class _Search:
    """Scored candidates, each evaluated once (the assigner on every image)."""

    def __init__(self, study: AnchorStudy, objective: Objective, max_evals: int,
                 progress: Optional[Callable[[int, int], None]]) -> None:
        self.study, self.objective, self.max_evals = study, objective, max_evals
        self.progress = progress
        self.scores: dict[AnchorParams, tuple[float, float]] = {}
        self.stats: dict[AnchorParams, GTStats] = {}

    @property
    def exhausted(self) -> bool:
        return len(self.scores) >= self.max_evals

    def __call__(self, params: AnchorParams) -> tuple[float, float]:
        if params not in self.scores:
            stats = self.study.assign(_parts_for(self.study, params))
            self.scores[params], self.stats[params] = score(stats, self.objective), stats
            if self.progress is not None:
                self.progress(len(self.scores), self.max_evals)
        return self.scores[params]


def _compass(search: _Search, start: AnchorParams, step: float = 0.25,
             min_step: float = 1 / 32) -> AnchorParams:
    """Step 2: try +/- ``step`` on each coordinate in turn, move on the first improvement;
    halve the step after a pass without one."""
    best, x = start, start.vector()
    dims = len(x)
    while step >= min_step and not search.exhausted:
        moved = False
        for i in range(dims):
            for sign in (1.0, -1.0):
                cand_x = x.copy()
                cand_x[i] += sign * step
                if i >= dims - len(start.ratios) and abs(cand_x[i]) > RATIO_LIMIT:
                    continue
                cand = start.with_vector(cand_x)
                if search(cand) > search(best):
                    best, x, moved = cand, cand.vector(), True
                    break
                if search.exhausted:
                    return best
        if not moved:
            step /= 2
    return best


def optimize_anchors(study: AnchorStudy, objective: Objective = "coverage", max_evals: int = 100,
                     progress: Optional[Callable[[int, int], None]] = None) -> OptimizeResult:
    """Search the configured generator's scales and ratios; see the module docstring."""
    if objective not in ("coverage", "mean-iou"):
        raise ConfigError(f"objective must be 'coverage' or 'mean-iou', got {objective!r}")
    if max_evals < 2:
        raise ConfigError(f"max_evals must be >= 2 (the configured and the seeded design), "
                          f"got {max_evals}")
    started = time.perf_counter()
    configured = AnchorParams.from_config(study.parts.anchor_cfg, study.parts.anchor_key)
    seeded, centres = seed_params(study, configured)
    search = _Search(study, objective, max_evals, progress)
    start = max((configured, seeded), key=search)
    best = _compass(search, start)
    log.info("anchor search: %d designs scored in %.1f s", len(search.scores),
             time.perf_counter() - started)
    return OptimizeResult(
        objective=objective,
        before=study.report(stats=search.stats[configured]),
        after=study.report(_parts_for(study, best), search.stats[best]),
        params_before=configured, params_seed=seeded, params_after=best,
        score_before=search(configured), score_seed=search(seeded), score_after=search(best),
        kmeans_ratio_centres=centres, evaluations=len(search.scores),
        seconds=time.perf_counter() - started, anchor_cfg=study.parts.anchor_cfg,
        config_key=study.parts.anchor_key,
    )


@dataclass
class AnchorAnalysis:
    """What ``det analyze anchors`` reports: the configured design's report and, after
    ``--optimize``, the search (:class:`OptimizeResult`)."""

    report: AnchorReport
    optimized: Optional[OptimizeResult] = None

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON (docs/analyze.md), with the search under ``optimize`` (without
        a second copy of the configured design's report)."""
        data = dict(self.report.to_dict())
        if self.optimized is not None:
            data["optimize"] = self.optimized.to_dict(before_report=False)
        return data
