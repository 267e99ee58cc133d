"""Running a detector over a test loader: eval mode, views, dataset order, gathering ranks.

I images in the dataset, N images per batch, V test-time views per image (MultiScaleFlipAug).

A test loader yields, per batch, the V view batches of its N images (:func:`collate_test`; a
pipeline without MultiScaleFlipAug gives V = 1). Without TTA the model sees view 0 (the first
scale, unflipped); with TTA every view, merged by :func:`detcli.engine.tta.merge_views`.
Detections are in original-image pixels and come back as one :class:`Detections` per dataset
image, in dataset order, empty ones included: the sampler's order says which image each batch
row is, so a distributed sampler (each rank a share, padded by repeats) is fine, a shuffling
one is not. In a distributed run every rank gets every image's detections
(``all_gather_object``).

Memory: detections are kept on the CPU and a mask detector's pasted (D, H, W) bitmaps are
encoded to RLE batch by batch (:func:`compact`), so a validation set's masks never sit in
memory as bitmaps; what is gathered and returned carries ``mask_rles``, never ``masks``.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from detcli.data.collate import collate, collate_views
from detcli.data.loader import build_dataloader
from detcli.engine.checkpoint import LoadReport, load_checkpoint, unwrap_model
from detcli.engine.tta import TTAConfig, merge_views
from detcli.errors import CheckpointError, DetError
from detcli.models.introspect import declared_num_classes, num_classes_key
from detcli.structures.batch import ImageBatch
from detcli.structures.detections import Detections

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (images done, images in all)
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def collate_test(samples: list[dict[str, Any]]) -> list[ImageBatch]:
    """Test samples -> V view batches: MultiScaleFlipAug samples through ``collate_views``,
    plain samples as one view (their GT, if any, is not needed)."""
    if samples and samples[0] is not None and "views" in samples[0]:
        return collate_views(samples)
    return [collate(samples)[0]]


def build_test_loader(dataset: Dataset, *, samples_per_gpu: int = 1, workers_per_gpu: int = 0,
                      distributed: bool = False) -> DataLoader:
    """An unshuffled loader of :func:`collate_test` batches over every image of ``dataset``."""
    return build_dataloader(dataset, samples_per_gpu, workers_per_gpu, shuffle=False,
                            distributed=distributed, collate_fn=collate_test)


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """Autocast to ``amp`` ("fp16" or "bf16") on ``device``; None: full precision."""
    if amp is None:
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise DetError(f"amp must be one of {sorted(AMP_DTYPES)} or None, got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def loader_indices(loader: DataLoader) -> list[int]:
    """The dataset index of every row the loader will yield, in order (from its sampler)."""
    if loader.batch_sampler is None:
        raise DetError("a test loader needs a batch size (its batch_sampler is None)")
    if isinstance(loader.sampler, RandomSampler):
        raise DetError("a test loader must not shuffle: its results are matched to dataset "
                       "images by the sampler's order", hint="build it with shuffle=False")
    return [int(i) for batch in loader.batch_sampler for i in batch]


def _check_order(views: Sequence[ImageBatch], indices: Sequence[int], dataset: Any) -> None:
    """DetError when the batch's ``image_id`` metas disagree with the sampler's indices."""
    infos = getattr(dataset, "img_infos", None)
    if infos is None:
        return
    for meta, index in zip(views[0].metas, indices):
        expected = infos[index].get("id")
        if "image_id" in meta and expected is not None and meta["image_id"] != expected:
            raise DetError(f"the loader yielded image {meta['image_id']} where its sampler said "
                           f"dataset index {index} (image {expected}); test loaders need a "
                           "deterministic sampler")


def iterate_views(loader: DataLoader, indices: Sequence[int]
                  ) -> Iterator[tuple[list[int], list[ImageBatch]]]:
    """(dataset indices of the batch's N images, V view batches) for every batch; ``indices``
    are :func:`loader_indices`."""
    start = 0
    for batch in loader:
        if isinstance(batch, list):  # collate_test: V view batches
            views = batch
        else:  # collate: (ImageBatch, DetTargets | None)
            views = [batch[0] if isinstance(batch, tuple) else batch]
        rows = list(indices[start: start + len(views[0])])
        start += len(rows)
        _check_order(views, rows, loader.dataset)
        yield rows, views


def run_inference_modes(model: nn.Module, loader: DataLoader, device: torch.device | str, *,
                        modes: Sequence[str] = ("plain",), amp: str | None = None,
                        progress: Progress | None = None,
                        tta_cfg: TTAConfig | None = None) -> dict[str, list[Detections]]:
    """Detections of every dataset image for each of ``modes`` ("plain": view 0, "tta": every
    view merged with ``tta_cfg``, the config's ``[tta]``; None: its defaults) from one pass
    over ``loader``."""
    unknown = set(modes) - {"plain", "tta"}
    if unknown:
        raise DetError(f"unknown inference mode(s) {sorted(unknown)}; use 'plain' and/or 'tta'")
    device = torch.device(device)
    model = unwrap_model(model)  # DDP has no predict; each rank runs its own share anyway
    was_training = model.training
    model.eval()
    found: dict[str, dict[int, Detections]] = {mode: {} for mode in modes}
    indices = loader_indices(loader)  # this rank's share, in loader order
    done = 0
    try:
        with torch.inference_mode(), autocast(device, amp):
            for rows, views in iterate_views(loader, indices):
                views = [v.to(device, non_blocking=True) for v in views]
                for mode in modes:
                    dets = merge_views(model, views, tta_cfg) if mode == "tta" \
                        else model.predict(views[0])
                    found[mode].update(zip(rows, (compact(d) for d in dets)))
                    del dets  # the batch's bitmaps go now, not when the next batch is run
                done += len(rows)
                if progress is not None:
                    progress(done, len(indices))
    finally:
        model.train(was_training)
    num_images = len(loader.dataset)  # type: ignore[arg-type]
    return {mode: gather_by_index(found[mode], num_images) for mode in modes}


def compact(dets: Detections) -> Detections:
    """One image's detections as they are kept: on the CPU, masks as RLE (bitmaps dropped)."""
    return dets.with_encoded_masks().to("cpu")


def run_inference(model: nn.Module, loader: DataLoader, device: torch.device | str, *,
                  tta: bool = False, amp: str | None = None,
                  progress: Progress | None = None,
                  tta_cfg: TTAConfig | None = None) -> list[Detections]:
    """One :class:`Detections` per dataset image, in dataset order (see the module docstring);
    with ``tta`` the views merged with ``tta_cfg``."""
    mode = "tta" if tta else "plain"
    return run_inference_modes(model, loader, device, modes=(mode,), amp=amp,
                               progress=progress, tta_cfg=tta_cfg)[mode]


def gather_by_index(found: dict[int, Detections], num_images: int) -> list[Detections]:
    """This rank's ``{dataset index: detections}`` -> every image's, in dataset order.

    With torch.distributed initialised, the ranks' dicts are exchanged first
    (``all_gather_object``; the repeats a distributed sampler pads with agree). An image no rank
    saw is an error: evaluation never drops an image.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        shards: list[dict[int, Detections] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(shards, found)
        found = {k: v for shard in shards if shard for k, v in shard.items()}
    missing = [i for i in range(num_images) if i not in found]
    if missing:
        raise DetError(f"{len(missing)} of {num_images} images got no detections entry (first "
                       f"indices {missing[:5]}); the test loader must cover the whole dataset",
                       hint="build it with drop_last=False and an unshuffled sampler")
    return [found[i] for i in range(num_images)]


def load_test_checkpoint(model: nn.Module, path: str | Path, *,
                         class_names: Sequence[str] | None = None) -> LoadReport:
    """Load ``path`` into ``model`` for testing: every model tensor must come from it.

    A shape mismatch or a tensor the checkpoint lacks is a CheckpointError that lists them and,
    when the checkpoint's ``meta.classes`` disagree with the head's ``num_classes``, names both.
    Keys the model does not use are logged. ``class_names`` (the dataset's) are compared with
    ``meta.classes``: different names with the same count are a warning (labels match by index).
    A NaN or infinite weight is a CheckpointError naming the tensors (a NaN model's mAP of 0 is
    not a result). ``det test``, ``det predict``, ``det export onnx`` and
    ``Detector.from_checkpoint`` all load through here.
    """
    report = load_checkpoint(path, model, require_finite=True)
    if report.mismatched or report.missing:
        raise CheckpointError(_mismatch_message(model, report),
                              hint="test with the config the checkpoint was trained with (its "
                                   "work_dir/config.toml, also kept in the checkpoint's meta)")
    if report.unexpected:
        log.warning("%d tensors of %s are not used by the model: %s", len(report.unexpected),
                    path, ", ".join(report.unexpected[:8]))
    trained = report.meta.get("classes")
    if class_names is not None and trained is not None and list(trained) != list(class_names):
        log.warning("the checkpoint was trained on classes %s but the dataset has %s; labels "
                    "are matched by position", list(trained), list(class_names))
    return report


def _mismatch_message(model: nn.Module, report: LoadReport) -> str:
    lines = [f"checkpoint {report.path} does not fit the model built from the config: "
             f"{len(report.mismatched)} tensor(s) differ in shape, {len(report.missing)} "
             "missing in the checkpoint"]
    trained = report.meta.get("classes")
    num_classes = declared_num_classes(model)
    if trained is not None and num_classes is not None and len(trained) != num_classes:
        lines.append(f"  the checkpoint was trained on {len(trained)} classes "
                     f"({', '.join(map(str, trained[:10]))}), but the config has "
                     f"{num_classes_key(model)} = {num_classes}")
    lines += report.lines()[1:]
    return "\n".join(lines)
