"""DINO's contrastive denoising queries (MMDetection 3.3's ``CdnQueryGenerator``, its names
and semantics): noisy copies of the GT boxes that the decoder learns to reconstruct.

N images, G GT slots per image (the batch's padded GT count: MMDetection's
``max_num_target``; padding slots have label -1), P denoising groups, D = 2 * P * G denoising
queries, Q matching queries, E = ``embed_dims``, K classes.

Groups: ``group_cfg.dynamic`` gives P = ``num_dn_queries // G`` (at least 1; 1 without GT),
so P * G -- the positive queries -- stays at most ``num_dn_queries`` (D at most twice that)
whatever the GT count; static groups give P = ``num_groups``.

Layout of the D queries of every image: group p holds 2G consecutive queries, first the
positive copy of each GT slot (``p * 2G + j``), then the negative copy (``p * 2G + G + j``).
A padding slot's queries are all zero (content and position) and never a target.

- Labels: each copy keeps its GT's class, except that with probability
  ``label_noise_scale / 2`` it takes a uniformly drawn class in [0, K) (which may be the same
  one); the content query is ``label_embedding`` of that class (E).
- Boxes: on the normalised (x1, y1, x2, y2) of the GT, every coordinate moves by
  ``part * sign * (w, h, w, h) * box_noise_scale / 2`` with ``sign`` +-1 and ``part`` uniform
  in [0, 1) for a positive copy and in [1, 2) for a negative one: a positive's corners stay
  within half ``box_noise_scale`` of the box size of the GT's corners, a negative's lie between
  that and twice as far. Clamped to [0, 1], to (cx, cy, w, h), then to logits
  (``inverse_sigmoid``, eps 1e-3): the queries' initial reference boxes.
- Attention mask (D + Q, D + Q), True = may not attend (``torch.nn.MultiheadAttention``'s
  boolean ``attn_mask``): the matching queries see no denoising query (they must not learn from
  the GT), and each denoising group sees only itself and the matching queries.

Random draws: :class:`CdnNoise` holds every number drawn, in the layout above (the draws of
padding slots are unused), so a caller can give them (a parity test replays MMDetection's).
Drawn here, they come from this module's own ``torch.Generator`` on the queries' device,
seeded on every call from Python's ``random`` -- the training seeds that generator
(``seed + rank``) and a checkpoint saves and restores its state with the others
(engine/seed.py), so a resumed run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.ops.logits import inverse_sigmoid
from detcli.ops.boxes import xyxy_to_cxcywh

DN_BOX_EPS = 1e-3  # MMDetection's inverse_sigmoid eps for the denoising boxes


class DenoisingGroupConfig(Schema):
    """MMDetection's ``dn_cfg.group_cfg``: dynamic groups (at most ``num_dn_queries``
    denoising queries) or a fixed ``num_groups``."""

    dynamic: bool = True
    num_groups: Maybe[int] = Field(None, ge=1)
    num_dn_queries: Maybe[int] = Field(100, ge=1)

    @model_validator(mode="after")
    def _one_rule(self) -> DenoisingGroupConfig:
        if self.dynamic and self.num_dn_queries is None:
            raise ValueError("group_cfg.dynamic = true needs num_dn_queries (e.g. 100)")
        if not self.dynamic and self.num_groups is None:
            raise ValueError("group_cfg.dynamic = false needs num_groups (e.g. 5)")
        return self


class CdnQueryGeneratorConfig(Schema):
    """MMDetection's ``dn_cfg`` (the detector derives ``num_classes``, ``embed_dims`` and the
    number of matching queries)."""

    label_noise_scale: float = Field(0.5, gt=0, le=2)
    box_noise_scale: float = Field(1.0, gt=0)
    group_cfg: DenoisingGroupConfig = Field(default_factory=DenoisingGroupConfig)


@dataclass(frozen=True)
class DenoisingMeta:
    """How the denoising queries of a batch are laid out (MMDetection's ``dn_meta``)."""

    num_groups: int  # P
    num_slots: int  # G

    @property
    def num_queries(self) -> int:
        """D = 2 * P * G (MMDetection's ``num_denoising_queries``)."""
        return 2 * self.num_groups * self.num_slots

    def layout(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """Of each of the D queries: its group (D,), whether it is a negative copy (D,) bool,
        and its GT slot (D,)."""
        index = torch.arange(self.num_queries, device=device)
        size = max(self.num_slots, 1)
        return index // (2 * size), (index // size) % 2 == 1, index % size


@dataclass(frozen=True)
class CdnNoise:
    """Every random number of one batch's denoising queries, (N, 2P, G) per copy: copy r of
    group p = r // 2 is positive for even r, negative for odd r."""

    label_draw: Tensor  # (N, 2P, G) uniform [0, 1): the label is replaced below scale / 2
    new_labels: Tensor  # (N, 2P, G) int64 uniform in [0, K): the replacement
    box_sign: Tensor  # (N, 2P, G, 4) float, -1 or 1
    box_part: Tensor  # (N, 2P, G, 4) float uniform [0, 1) (a negative copy adds 1)


@dataclass(frozen=True)
class DenoisingQueries:
    label_query: Tensor  # (N, D, E) content queries
    bbox_query: Tensor  # (N, D, 4) logits of normalised (cx, cy, w, h): reference boxes
    attn_mask: Tensor  # (D + Q, D + Q) bool, True = masked
    meta: DenoisingMeta


class CdnQueryGenerator(nn.Module):
    """Denoising queries from the GT (module docstring). ``label_embedding`` is its one
    parameter (K, E), MMDetection's ``dn_query_generator.label_embedding.weight``."""

    def __init__(self, *, num_classes: int, embed_dims: int, num_matching_queries: int,
                 label_noise_scale: float = 0.5, box_noise_scale: float = 1.0,
                 group_cfg: DenoisingGroupConfig | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.num_matching_queries = num_matching_queries
        self.label_noise_scale = label_noise_scale
        self.box_noise_scale = box_noise_scale
        self.group_cfg = group_cfg or DenoisingGroupConfig()
        self.label_embedding = nn.Embedding(num_classes, embed_dims)
        self._generators: dict[torch.device, torch.Generator] = {}

    @classmethod
    def from_config(cls, cfg: CdnQueryGeneratorConfig, *, num_classes: int, embed_dims: int,
                    num_matching_queries: int) -> CdnQueryGenerator:
        return cls(num_classes=num_classes, embed_dims=embed_dims,
                   num_matching_queries=num_matching_queries,
                   label_noise_scale=cfg.label_noise_scale,
                   box_noise_scale=cfg.box_noise_scale, group_cfg=cfg.group_cfg)

    def num_groups(self, num_slots: int) -> int:
        """P for a batch of G = ``num_slots`` GT slots (module docstring)."""
        if not self.group_cfg.dynamic:
            return int(self.group_cfg.num_groups)
        if num_slots == 0:
            return 1
        return max(int(self.group_cfg.num_dn_queries) // num_slots, 1)

    def generator(self, device: torch.device) -> torch.Generator:
        """This module's generator on ``device``, freshly seeded from Python's ``random``."""
        device = torch.device(device)
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device)
        gen = self._generators[device]
        gen.manual_seed(random.getrandbits(63))
        return gen

    def draw_noise(self, num_images: int, num_groups: int, num_slots: int,
                   device: torch.device | str,
                   generator: torch.Generator | None = None) -> CdnNoise:
        """Fresh draws for N images, P groups and G slots from ``generator`` (default:
        :meth:`generator`; ``det viz assign`` passes one seeded with its ``--seed``)."""
        gen = generator if generator is not None else self.generator(torch.device(device))
        copies = (num_images, 2 * num_groups, num_slots)
        return CdnNoise(
            label_draw=torch.rand(copies, generator=gen, device=device),
            new_labels=torch.randint(0, self.num_classes, copies, generator=gen, device=device),
            box_sign=torch.randint(0, 2, (*copies, 4), generator=gen,
                                   device=device).float() * 2.0 - 1.0,
            box_part=torch.rand((*copies, 4), generator=gen, device=device))

    def forward(self, gt_boxes: Tensor, gt_labels: Tensor, img_shapes: Tensor,
                noise: CdnNoise | None = None) -> DenoisingQueries:
        """GT boxes (N, G, 4) in pixels, labels (N, G) (-1: padding), image shapes (N, 2)
        (h, w) -> the denoising queries, their attention mask and layout. ``noise``: the
        draws to use (default: fresh ones)."""
        num_images, num_slots = gt_labels.shape
        meta = DenoisingMeta(self.num_groups(num_slots), num_slots)
        if noise is None:
            noise = self.draw_noise(num_images, meta.num_groups, num_slots, gt_boxes.device)
        valid = (gt_labels >= 0)[:, None, :]  # (N, 1, G)
        label_query = self.label_embedding(self.noisy_labels(gt_labels, noise))  # (N,2P,G,E)
        label_query = torch.where(valid[..., None], label_query, 0.0)
        noisy = xyxy_to_cxcywh(self.noisy_boxes(gt_boxes, img_shapes, noise))  # (N, 2P, G, 4)
        bbox_query = torch.where(valid[..., None], inverse_sigmoid(noisy, DN_BOX_EPS), 0.0)

        return DenoisingQueries(
            label_query=label_query.reshape(num_images, meta.num_queries, self.embed_dims),
            bbox_query=bbox_query.reshape(num_images, meta.num_queries, 4),
            attn_mask=self.attention_mask(meta, gt_boxes.device), meta=meta)

    def noisy_labels(self, gt_labels: Tensor, noise: CdnNoise) -> Tensor:
        """GT labels (N, G) -> each copy's label (N, 2P, G): the GT's, or its replacement
        where the draw is below ``label_noise_scale / 2`` (padding slots read as class 0)."""
        copies = noise.label_draw.shape[1]
        labels = gt_labels.clamp(min=0)[:, None, :].expand(-1, copies, -1)  # (N, 2P, G)
        replace = noise.label_draw < self.label_noise_scale * 0.5
        return torch.where(replace, noise.new_labels, labels)

    def noisy_boxes(self, gt_boxes: Tensor, img_shapes: Tensor, noise: CdnNoise) -> Tensor:
        """GT boxes (N, G, 4) in pixels, image shapes (N, 2) -> each copy's box (N, 2P, G, 4),
        normalised (x1, y1, x2, y2) clamped to [0, 1] (module docstring, "Boxes")."""
        copies = noise.box_part.shape[1]
        factors = img_shapes.flip(-1).repeat(1, 2).to(gt_boxes)[:, None, None, :]  # (N,1,1,4)
        gt_norm = gt_boxes[:, None] / factors  # (N, 1, G, 4) normalised (x1, y1, x2, y2)
        size = gt_norm[..., 2:] - gt_norm[..., :2]  # (N, 1, G, 2) (w, h)
        negative = (torch.arange(copies, device=gt_boxes.device) % 2).to(gt_boxes)  # (2P,)
        part = (noise.box_part + negative[None, :, None, None]) * noise.box_sign
        noisy = gt_norm + part * size.repeat(1, 1, 1, 2) * self.box_noise_scale / 2
        return noisy.clamp(min=0.0, max=1.0)

    def attention_mask(self, meta: DenoisingMeta, device: torch.device | str) -> Tensor:
        """(D + Q, D + Q) bool, True where query (row) may not attend to query (column)."""
        total = meta.num_queries + self.num_matching_queries
        index = torch.arange(total, device=device)
        group = torch.where(index < meta.num_queries,
                            index // (2 * max(meta.num_slots, 1)), -1)  # (D + Q,) -1: matching
        to_denoising = index < meta.num_queries  # (D + Q,) columns of denoising queries
        return to_denoising[None, :] & (group[:, None] != group[None, :])
