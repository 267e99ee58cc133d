"""Recognise a folder of images and labels as a COCO, VOC or YOLO dataset (``det init``).

Nothing here writes: :func:`discover` reads the folder and returns a :class:`DataLayout`, the
dataset config of each split it found (type, ann_file, img_prefix) and the class names, with a
note for each guess. A split the config cannot name directly (VOC without an image-set file,
a YOLO folder listed in ``data.yaml``) carries ``members``, the list a writer puts in a file.

Layouts and their common variations (searched down to ``MAX_DEPTH`` folders):

- COCO: every ``*.json`` whose top level has ``images``, ``annotations`` and ``categories``
  lists. Its split comes from its name (``instances_train2017.json``) or its folder's
  (``train/_annotations.coco.json``); its images are in the folder holding most of its first
  ``SAMPLE`` file names. A single unnamed file is the training split.
- VOC: a folder with ``Annotations/`` and ``JPEGImages/``. ``ImageSets/Main/{train,val,
  trainval,test}.txt`` give the splits (``trainval`` trains and ``test`` evaluates when there
  is no ``val``); without them every XML is one split. Several such folders are split by name.
- YOLO: an ``images/`` folder next to a ``labels/`` one, split by the subfolders of ``images/``
  (``images/train``) or by the folder above (``train/images``); ``data.yaml``'s ``train`` /
  ``val`` / ``test`` folders or lists win when they exist. Class names come from ``data.yaml``'s
  ``names``, else ``classes.txt`` or ``obj.names``; none means ``classes`` is None and the
  caller asks.

Split names: a word of the file or folder name (``train``, ``trainval``, ``training``; ``val``,
``valid``, ``validation``, ``dev``; ``test``), digits ignored.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from detcli.data.data_yaml import read_data_yaml
from detcli.data.datasets.yolo import IMAGE_SUFFIXES
from detcli.errors import DataError

log = logging.getLogger(__name__)

Format = Literal["coco", "voc", "yolo"]
FORMATS: tuple[Format, ...] = ("coco", "voc", "yolo")
SPLITS = ("train", "val", "test")
MAX_DEPTH = 3  # folders below DATA_DIR that are searched
SAMPLE = 20  # COCO file names tried per candidate image folder
DATASET_TYPE = {"coco": "CocoDataset", "voc": "VOCDataset", "yolo": "YOLODataset"}
_SPLIT_WORDS = {"train": {"train", "training", "trainval"},
                "val": {"val", "valid", "validation", "dev"},
                "test": {"test", "testing"}}
_NAME_FILES = ("classes.txt", "obj.names", "classes.names")


@dataclass
class SplitSource:
    """Where one split's annotations are: the dataset config fields, and how they were found."""

    name: str  # "train", "val" or "test"
    img_prefix: Path
    ann_file: Optional[Path] = None  # COCO json, VOC image-set file, YOLO image list
    members: Optional[list[str]] = None  # a list the writer must put in a file (VOC ids, YOLO paths)
    found: str = ""  # what it was recognised from, for the report


@dataclass
class DataLayout:
    """What :func:`discover` recognised under ``root``."""

    root: Path
    format: Format
    splits: dict[str, SplitSource]  # "train" always; "val" and "test" when found
    classes: Optional[tuple[str, ...]]  # None: a YOLO folder without names
    classes_source: str
    num_label_classes: int = 0  # YOLO: the highest class number in the labels, plus one
    notes: list[str] = field(default_factory=list)

    @property
    def dataset_type(self) -> str:
        return DATASET_TYPE[self.format]


def split_of(name: str) -> Optional[str]:
    """The split a file or folder name says (module docstring), or None."""
    words = set(re.split(r"[^a-z]+", name.lower()))
    for split, names in _SPLIT_WORDS.items():
        if words & names:
            return split
    return None


def _dirs(root: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """``root`` and its folders down to ``depth`` levels, hidden ones left out, sorted."""
    found, level = [root], [root]
    for _ in range(depth):
        level = sorted(d for parent in level for d in parent.iterdir()
                       if d.is_dir() and not d.name.startswith("."))
        found += level
    return found


def _assign(candidates: list[tuple[Optional[str], Any, str]], what: str,
            notes: list[str]) -> dict[str, tuple[Any, str]]:
    """Split name -> (item, description) from (split or None, item, description) triples: one
    unnamed candidate alone is "train"; an unnamed one next to named ones is left out."""
    if len(candidates) == 1:
        split, item, desc = candidates[0]
        if split not in (None, "train"):
            notes.append(f"{desc} is the only split found; it is used for training")
        return {"train": (item, desc)}
    named = [c for c in candidates if c[0] is not None]
    if not named:
        if len(candidates) > 1:
            listed = ", ".join(c[2] for c in candidates)
            raise DataError(f"found {len(candidates)} {what} and none is named train, val or test: "
                            f"{listed}", hint="point DATA_DIR at the folder of one dataset, or "
                            "rename them after their split")
        return {"train": (candidates[0][1], candidates[0][2])}
    out: dict[str, tuple[Any, str]] = {}
    for split, item, desc in named:
        if split in out:
            raise DataError(f"two {what} for the {split} split: {out[split][1]} and {desc}",
                            hint="point DATA_DIR at the folder of one dataset")
        out[split] = (item, desc)
    if "train" not in out:
        raise DataError(f"found no training split among the {what}: "
                        + ", ".join(f"{d} ({s or 'no split in its name'})" for s, _, d in candidates),
                        hint="name the training files or folder after `train`")
    for split, _, desc in candidates:
        if split is None:
            notes.append(f"left out {desc}: its name says no split (train, val or test)")
    return out


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


# -- COCO ---------------------------------------------------------------------------------------

def _coco_files(root: Path, notes: list[str]) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for folder in _dirs(root):
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and all(isinstance(data.get(k), list)
                                              for k in ("images", "annotations", "categories")):
                if data["images"]:
                    found.append((path, data))
                else:
                    notes.append(f"left out {_rel(path, root)}: it lists no image")
    return found


def _coco_image_folder(path: Path, data: dict[str, Any], root: Path, split: Optional[str]) -> Path:
    """The folder holding most of the file's first SAMPLE images."""
    names = [str(i.get("file_name", "")) for i in data["images"][:SAMPLE] if isinstance(i, dict)]
    candidates = [path.parent] + [d for d in _dirs(root) if d != path.parent]

    def rank(folder: Path) -> tuple[int, bool, int]:
        hits = sum((folder / n).is_file() for n in names)
        return hits, split is not None and split_of(folder.name) == split, -len(folder.parts)

    best = max(candidates, key=rank)
    if rank(best)[0] == 0:
        raise DataError(f"{path}: none of its first {len(names)} images (e.g. {names[0] if names else '?'}) "
                        f"is under {root} or its folders",
                        hint="put the images in a folder under DATA_DIR (file_name is relative to it)")
    return best


def _discover_coco(root: Path, notes: list[str]) -> Optional[DataLayout]:
    files = _coco_files(root, notes)
    if not files:
        return None
    candidates = []
    for path, data in files:
        split = split_of(path.stem) or (split_of(path.parent.name) if path.parent != root else None)
        candidates.append((split, (path, data), _rel(path, root)))
    chosen = _assign(candidates, "COCO annotation files", notes)
    splits = {}
    for split, ((path, data), desc) in chosen.items():
        folder = _coco_image_folder(path, data, root, split)
        splits[split] = SplitSource(split, folder, ann_file=path,
                                    found=f"{desc} (images in {_rel(folder, root) or '.'}/)")
    path, data = chosen["train"][0] if "train" in chosen else next(iter(chosen.values()))[0]
    cats = sorted((c for c in data["categories"] if isinstance(c, dict)), key=lambda c: c.get("id", 0))
    classes = tuple(str(c.get("name")) for c in cats)
    return DataLayout(root, "coco", splits, classes,
                      f"the categories of {_rel(path, root)}, by id", notes=notes)


# -- VOC ----------------------------------------------------------------------------------------

def _voc_roots(root: Path) -> list[Path]:
    return [d for d in _dirs(root) if (d / "Annotations").is_dir() and (d / "JPEGImages").is_dir()]


def _voc_sets(voc: Path) -> dict[str, Path]:
    main = voc / "ImageSets" / "Main"
    names = ("train", "val", "trainval", "test")
    return {n: main / f"{n}.txt" for n in names if (main / f"{n}.txt").is_file()}


def _voc_splits(voc: Path, root: Path, notes: list[str]) -> list[tuple[Optional[str], SplitSource, str]]:
    """One VOC folder's splits from its image-set files, or one split of every XML (named by
    the folder's name when there are several folders)."""
    if not any(p.suffix.lower() == ".jpg" for p in (voc / "JPEGImages").iterdir()):
        raise DataError(f"{voc / 'JPEGImages'} holds no .jpg file; VOCDataset reads "
                        "JPEGImages/<id>.jpg", hint="convert the images to JPEG, or use the YOLO or COCO layout")
    sets = _voc_sets(voc)
    chosen: dict[str, Path] = {}
    if "train" in sets:
        chosen["train"] = sets["train"]
        if "val" in sets:
            chosen["val"] = sets["val"]
    elif "trainval" in sets:
        chosen["train"] = sets["trainval"]
        if "test" in sets:
            chosen["val"] = sets["test"]
            notes.append(f"{_rel(voc, root) or '.'}: trains on trainval and evaluates on test "
                         "(VOC's convention; there is no val.txt)")
    if chosen and "test" in sets:
        chosen["test"] = sets["test"]
    if chosen:
        return [(name, SplitSource(name, voc, ann_file=path, found=_rel(path, root)), _rel(path, root))
                for name, path in chosen.items()]
    ids = sorted(p.stem for p in (voc / "Annotations").glob("*.xml"))
    if not ids:
        raise DataError(f"{voc / 'Annotations'} holds no .xml file")
    desc = f"{_rel(voc, root) or '.'}/Annotations (all {len(ids)} XML files; no ImageSets/Main lists)"
    split = split_of(voc.name) if voc != root else None
    return [(split, SplitSource(split or "train", voc, members=ids, found=desc), desc)]


def voc_object_names(voc: Path, ids: list[str]) -> tuple[str, ...]:
    """The sorted object names of the XML files of ``ids`` (unreadable files are skipped:
    the dataset reports them)."""
    names: set[str] = set()
    for image_id in ids:
        try:
            tree = ET.parse(voc / "Annotations" / f"{image_id}.xml")
        except (OSError, ET.ParseError):
            continue
        names |= {(o.findtext("name") or "").strip() for o in tree.getroot().iter("object")}
    return tuple(sorted(n for n in names if n))


def _discover_voc(root: Path, notes: list[str]) -> Optional[DataLayout]:
    vocs = _voc_roots(root)
    if not vocs:
        return None
    candidates = [c for voc in vocs for c in _voc_splits(voc, root, notes)]
    chosen = {name: source for name, (source, _) in _assign(candidates, "VOC splits", notes).items()}
    for name, source in chosen.items():
        source.name = name
    train = chosen["train"]
    ids = train.members if train.members is not None else _read_ids(train.ann_file)
    classes = voc_object_names(train.img_prefix, ids)
    if not classes:
        raise DataError(f"the XML files of {train.found} name no object", hint="VOC objects are "
                        "<object><name>...</name><bndbox>...</bndbox></object>")
    return DataLayout(root, "voc", chosen, classes, f"the object names in {train.found}", notes=notes)


def _read_ids(path: Optional[Path]) -> list[str]:
    assert path is not None
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


# -- YOLO ---------------------------------------------------------------------------------------

def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _yolo_folders(root: Path) -> list[tuple[Optional[str], Path, str]]:
    """(split, image folder, description) of every ``images/`` folder beside a ``labels/``."""
    found = []
    for images in (d for d in _dirs(root) if d.name == "images" and (d.parent / "labels").is_dir()):
        subs = [d for d in sorted(images.iterdir()) if d.is_dir() and _has_images(d)]
        if subs and not _has_images(images):
            found += [(split_of(d.name), d, _rel(d, root)) for d in subs]
        else:
            split = split_of(images.parent.name) if images.parent != root else None
            found.append((split, images, _rel(images, root)))
    return found


def _yaml_splits(spec: dict[str, Any], yaml_path: Path) -> list[tuple[Optional[str], Path, str]]:
    """data.yaml's train/val/test entries that exist: folders or image lists."""
    base = yaml_path.parent
    if isinstance(spec.get("path"), str):
        given = Path(spec["path"]).expanduser()
        base = given if given.is_absolute() else yaml_path.parent / given
    found = []
    for split in SPLITS:
        entry = spec.get(split)
        if not isinstance(entry, str):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else (base / path).resolve()
        if path.exists():
            found.append((split, path, f"{yaml_path.name}: {split}: {entry}"))
    return found


def _yolo_source(split: str, path: Path, desc: str, root: Path) -> SplitSource:
    if path.is_dir():
        return SplitSource(split, path, found=desc)
    # an image list: paths relative to the list's folder (Ultralytics) or absolute
    images = [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    absolute = [p if p.is_absolute() else (path.parent / p).resolve() for p in images]
    return SplitSource(split, root, members=[_rel(p, root) for p in absolute], found=desc)


def _yolo_names(root: Path, spec: Optional[dict[str, Any]],
                yaml_path: Optional[Path]) -> tuple[Optional[tuple[str, ...]], str]:
    if spec is not None and spec.get("names"):
        return tuple(spec["names"]), f"`names` in {_rel(yaml_path, root)}"  # type: ignore[arg-type]
    for folder in _dirs(root, 2):
        for name in _NAME_FILES:
            path = folder / name
            if path.is_file():
                names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
                if names:
                    return names, _rel(path, root)
    return None, "no data.yaml `names`, classes.txt or obj.names"


def label_path(image: Path) -> Path:
    """Where YOLO keeps an image's labels: its last ``images`` folder swapped for ``labels``."""
    parts = image.parts
    if "images" not in parts[:-1]:
        return image.with_suffix(".txt")
    k = len(parts) - 2 - parts[-2::-1].index("images")
    return Path(*parts[:k], "labels", *parts[k + 1:]).with_suffix(".txt")


def _max_label(sources: dict[str, SplitSource]) -> int:
    """The highest class number of the label files, plus one (0 without labels)."""
    most = -1
    for source in sources.values():
        if source.members is not None:
            files = [label_path(source.img_prefix / m) for m in source.members]
        else:
            mirror = label_path(source.img_prefix / "x").parent
            files = sorted(mirror.rglob("*.txt")) if mirror.is_dir() else []
        for path in files:
            if not path.is_file():
                continue
            for line in path.read_text(errors="replace").splitlines():
                word = line.split()[:1]
                if word and word[0].isdigit():
                    most = max(most, int(word[0]))
    return most + 1


def _discover_yolo(root: Path, notes: list[str]) -> Optional[DataLayout]:
    yaml_path = next((p for d in _dirs(root, 1) for p in sorted(d.glob("*.yaml"))
                      if read_data_yaml(p) is not None), None)
    spec = read_data_yaml(yaml_path) if yaml_path is not None else None
    folders = _yolo_folders(root)
    from_yaml = _yaml_splits(spec, yaml_path) if spec is not None and yaml_path is not None else []
    if not folders and not from_yaml:
        return None
    if spec is not None and not from_yaml and any(spec.get(s) for s in SPLITS):
        notes.append(f"{yaml_path.name}'s train/val paths do not exist here; split by folder names")
    chosen = _assign(from_yaml or folders, "YOLO image folders", notes)
    sources = {s: _yolo_source(s, path, desc, root) for s, (path, desc) in chosen.items()}
    classes, classes_source = _yolo_names(root, spec, yaml_path)
    return DataLayout(root, "yolo", sources, classes, classes_source,
                      num_label_classes=_max_label(sources), notes=notes)


_FINDERS = {"coco": _discover_coco, "voc": _discover_voc, "yolo": _discover_yolo}
_LOOKED_FOR = {
    "coco": "a *.json with images, annotations and categories",
    "voc": "a folder with Annotations/ and JPEGImages/",
    "yolo": "an images/ folder next to a labels/ folder",
}


def discover(data_dir: str | Path, fmt: Optional[Format] = None) -> DataLayout:
    """The layout of ``data_dir``, in format ``fmt`` or the one format it matches."""
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{data_dir} is not a folder" + ("" if root.exists() else " (it does not exist)"))
    if fmt is not None and fmt not in _FINDERS:
        raise DataError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    layouts = {}
    for name in ([fmt] if fmt else FORMATS):
        layout = _FINDERS[name](root, [])
        if layout is not None:
            layouts[name] = layout
    if not layouts:
        wanted = [fmt] if fmt else list(FORMATS)
        raise DataError(f"{root} is not a {' or '.join(f.upper() for f in wanted)} dataset: looked for "
                        + "; ".join(f"{f.upper()}: {_LOOKED_FOR[f]}" for f in wanted),
                        hint=f"searched {MAX_DEPTH} folders deep; see docs/init.md for the layouts")
    if len(layouts) > 1:
        raise DataError(f"{root} looks like {' and '.join(f.upper() for f in layouts)} at once",
                        hint="choose one with --format " + " or --format ".join(layouts))
    return next(iter(layouts.values()))
