"""build_dataloader determinism, aspect-ratio grouping, worker seeding and SkipBadImages."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from detcli.data.loader import SkipBadImages, build_dataloader, set_epoch, worker_init_fn
from detcli.data.samplers import GroupedBatchSampler, aspect_ratio_groups
from detcli.errors import DataError


class ToyDataset(Dataset):
    """N tiny contract samples: image i is 16x8 (w x h) when i is even, 8x16 when odd."""

    def __init__(self, n=10, bad=(), none=()):
        self.img_infos = [{"id": i, "filename": f"/img/{i}.jpg", "width": 16 if i % 2 == 0 else 8,
                           "height": 8 if i % 2 == 0 else 16} for i in range(n)]
        self.bad, self.none = set(bad), set(none)

    def __len__(self):
        return len(self.img_infos)

    def __getitem__(self, i):
        if i in self.bad:
            raise DataError(f"broken image file /img/{i}.jpg: truncated")
        if i in self.none:
            return None
        info = self.img_infos[i]
        h, w = info["height"], info["width"]
        return {"img": torch.zeros(3, h, w), "gt_bboxes": torch.tensor([[0.0, 0, 2, 2]]),
                "gt_labels": torch.tensor([i % 3]),
                "img_metas": {"image_id": i, "img_shape": (h, w, 3), "ori_shape": (h, w, 3),
                              "scale_factor": np.ones(4, np.float32), "draw": np.random.rand()}}


def image_ids(loader):
    return [[m["image_id"] for m in images.metas] for images, _ in loader]


def test_same_seed_same_order_with_0_workers():
    a = image_ids(build_dataloader(ToyDataset(), 3, 0, shuffle=True, seed=7))
    b = image_ids(build_dataloader(ToyDataset(), 3, 0, shuffle=True, seed=7))
    c = image_ids(build_dataloader(ToyDataset(), 3, 0, shuffle=True, seed=8))
    assert a == b and a != c
    assert [len(x) for x in a] == [3, 3, 3, 1]
    assert sorted(sum(a, [])) == list(range(10))
    plain = image_ids(build_dataloader(ToyDataset(), 4, 0, shuffle=False, drop_last=True))
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_workers_get_seeded_numpy_state():
    def draws(seed):
        loader = build_dataloader(ToyDataset(6), 2, 2, shuffle=False, seed=seed, pin_memory=False)
        return [m["draw"] for images, _ in loader for m in images.metas]

    first, again, other = draws(3), draws(3), draws(4)
    assert first == again and first != other
    assert len(set(first)) == 6  # the two workers do not repeat each other's draws


def test_worker_init_fn_seeds_numpy_and_random_from_the_torch_seed():
    def draw(torch_seed):
        torch.manual_seed(torch_seed)  # in a worker: the loader's base seed + worker id
        worker_init_fn(0)
        return np.random.rand(), random.random()

    try:
        assert draw(1234) == draw(1234)
        assert draw(1234)[0] != draw(1235)[0] and draw(1234)[1] != draw(1235)[1]
        assert draw(2**40 + 5) == draw(5)  # numpy takes the seed modulo 2**32
    finally:
        torch.manual_seed(0)


def test_grouped_batches_share_orientation():
    groups = aspect_ratio_groups(ToyDataset(11))
    assert groups.tolist() == [1, 0] * 5 + [1]  # width >= height -> 1
    loader = build_dataloader(ToyDataset(11), 2, 0, shuffle=True, seed=0, group_by_aspect_ratio=True)
    batches = image_ids(loader)
    assert len(batches) == len(loader) == 6  # ceil(6 / 2) + ceil(5 / 2): groups topped up
    for batch in batches:
        assert len(batch) == 2 and len({i % 2 for i in batch}) == 1
    assert set(sum(batches, [])) == set(range(11))
    set_epoch(loader, 1)
    assert image_ids(loader) != batches  # a new epoch, a new order


def test_grouped_sampler_splits_replicas_evenly():
    groups = np.array([0, 0, 0, 1, 1, 1, 1])
    ranks = [list(GroupedBatchSampler(groups, 2, seed=1, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # 4 batches dealt to 2 replicas
    assert sorted(set(sum(sum(ranks, []), []))) == list(range(7))
    dropped = GroupedBatchSampler(groups, 2, drop_last=True, shuffle=False)
    assert list(dropped) == [[0, 1], [3, 4], [5, 6]] and len(dropped) == 3
    with pytest.raises(ValueError, match="rank"):
        GroupedBatchSampler(groups, 2, num_replicas=2, rank=2)


def test_skip_bad_images_records_and_substitutes():
    np.random.seed(0)
    data = SkipBadImages(ToyDataset(6, bad={2}))
    assert data[2]["img_metas"]["image_id"] != 2
    assert data[3]["img_metas"]["image_id"] == 3
    data[2]  # the same image again: counted once
    records = data.skipped()
    assert data.num_skipped == 1 and len(records) == 1
    assert (records[0].index, records[0].file) == (2, "/img/2.jpg")
    assert "truncated" in records[0].reason
    assert records[0].to_dict()["index"] == 2
    assert len(data.img_infos) == 6  # the wrapped dataset's attributes pass through


def test_skip_bad_images_through_workers():
    data = SkipBadImages(ToyDataset(8, bad={1, 5}, none={3}))
    loader = build_dataloader(data, 2, 2, shuffle=False, seed=0, pin_memory=False)
    ids = sum(image_ids(loader), [])
    assert len(ids) == 8 and not {1, 3, 5} & set(ids)
    assert sorted(r.index for r in data.skipped()) == [1, 5]  # a None sample is not "bad"


def test_skip_bad_images_writes_the_given_record_file(tmp_path):
    path = tmp_path / "skipped_images.jsonl"
    data = SkipBadImages(ToyDataset(4, bad={0}), record_file=path)
    np.random.seed(0)
    data[0]
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["file"] == "/img/0.jpg"
    del data
    assert path.exists()  # a file the caller named is the caller's


def test_skip_bad_images_gives_up():
    data = SkipBadImages(ToyDataset(3, bad={0, 1, 2}), max_tries=5)
    with pytest.raises(DataError, match="failed to load|in a row"):
        data[0]


def test_argument_checks():
    with pytest.raises(DataError, match="samples_per_gpu"):
        build_dataloader(ToyDataset(), 0, 0)
    loader = build_dataloader(ToyDataset(), 2, 0, distributed=True, persistent_workers=True)
    assert len(loader) == 5  # not initialised: one process, every image


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_batches():
    loader = build_dataloader(ToyDataset(4), 2, 1, shuffle=False, pin_memory=True)
    images, targets = next(iter(loader))
    assert images.tensor.is_pinned() and images.scale_factors.is_pinned()
    assert targets.boxes.is_pinned() and targets.labels.is_pinned()
    assert images.to("cuda", non_blocking=True).tensor.is_cuda


def test_distributed_sampler_when_initialised(tmp_path):
    import torch.distributed as dist
    from torch.utils.data import DistributedSampler

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        loader = build_dataloader(ToyDataset(6), 2, 0, shuffle=True, seed=3, distributed=True)
        assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.seed == 3
        first = image_ids(loader)
        set_epoch(loader, 1)
        assert loader.sampler.epoch == 1 and image_ids(loader) != first
        grouped = build_dataloader(ToyDataset(6), 2, 0, distributed=True, group_by_aspect_ratio=True)
        assert grouped.batch_sampler.num_replicas == 1
    finally:
        dist.destroy_process_group()


def test_per_sample_seeds_give_each_sample_its_draws_whoever_loads_it():
    def draws(workers, first_batch=0, epoch=1, persistent=False):
        loader = build_dataloader(ToyDataset(10), 3, workers, shuffle=True, seed=5, pin_memory=False,
                                  per_sample_seeds=True, persistent_workers=persistent)
        set_epoch(loader, epoch, first_batch=first_batch)
        return [(m["image_id"], m["draw"]) for images, _ in loader for m in images.metas]

    main = draws(0)
    assert sorted(i for i, _ in main) == list(range(10))  # every image once, shuffled
    assert draws(2) == main == draws(2, persistent=True)  # which worker loads it does not matter
    assert draws(2, first_batch=2) == main[6:]  # an epoch started at batch 2: the same tail
    other = draws(0, epoch=2)
    assert [i for i, _ in other] != [i for i, _ in main]  # another epoch, another order
    assert dict(other)[0] != dict(main)[0]  # and other draws for the same image
    state = np.random.get_state()[1].copy()
    draws(0)
    assert (np.random.get_state()[1] == state).all()  # the main process's generator is untouched
