"""The presets shipped inside the package, and the one rule that turns a config reference into a file.

A reference is what a user writes for a config: the CONFIG argument of every command, or an
entry of ``extends``. :func:`resolve_reference` resolves it the same way everywhere:

1. a path that exists wins: relative to the current directory for CONFIG, to the file that
   names it for ``extends``;
2. otherwise it is a preset name: the preset's path under ``detcli/presets`` without
   ``.toml`` (``retinanet_r50``, ``_base/models/retinanet_r50_fpn``). A ``.toml`` suffix and a
   leading ``presets/`` are accepted, so the documented ``presets/retinanet_r50.toml`` also
   works where there is no ``presets/`` folder (an installed package);
3. anything else is a :class:`ConfigError` that says where it looked and lists the closest
   names.

The loader resolves references with this module, so it imports nothing above it; describing
each preset from its resolved config is :mod:`detcli.config.catalog`'s.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path, PurePosixPath

from detcli.errors import ConfigError
from detcli.text import display_path

SUFFIX = ".toml"
BASES = "_base"


def presets_dir() -> Path:
    """The folder of packaged presets (``detcli/presets`` in the installed package)."""
    root = resources.files("detcli").joinpath("presets")
    if not isinstance(root, Path):  # a zipped install: presets would need extracting first
        raise ConfigError(f"the packaged presets are not a folder on disk ({root})",
                          hint="install detcli as files (pip install), not as a zip")
    return root


def preset_names(*, bases: bool = False, root: Path | None = None) -> list[str]:
    """Every preset's name, sorted; with ``bases`` the ``_base/...`` fragments too."""
    root = presets_dir() if root is None else root
    names = [p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}")]
    return sorted(n for n in names if bases or not n.startswith(f"{BASES}/"))


def preset_path(name: str, *, root: Path | None = None) -> Path | None:
    """The file of the preset ``name`` (see the module docstring for the accepted spellings),
    or None when there is none."""
    root = presets_dir() if root is None else root
    for candidate in _name_candidates(name):
        path = root.joinpath(*candidate.parts).with_suffix(SUFFIX)
        if path.is_file():
            return path
    return None


def _name_candidates(ref: str) -> list[PurePosixPath]:
    """The preset names a reference may mean: itself without ``.toml``, and without a leading
    ``presets/``. Absolute references and ``..`` never name a preset."""
    pure = PurePosixPath(ref.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return []
    if pure.suffix == SUFFIX:
        pure = pure.with_suffix("")
    candidates = [pure]
    if len(pure.parts) > 1 and pure.parts[0] == "presets":
        candidates.append(PurePosixPath(*pure.parts[1:]))
    return candidates


def resolve_reference(ref: str | Path, *, referrer: Path | None = None) -> Path:
    """The file a config reference means: ``ref`` as a path if it exists (relative to
    ``referrer``'s folder when given, the file whose ``extends`` names it), else the packaged
    preset it names; a :class:`ConfigError` naming where it looked otherwise."""
    text = str(ref)
    path = Path(text).expanduser()
    if referrer is not None and not path.is_absolute():
        path = referrer.parent / path
    if path.exists():  # a path that exists wins (a folder fails when it is read, with its message)
        return path
    packaged = preset_path(text)
    if packaged is not None:
        return packaged
    name = (_name_candidates(text) or [PurePosixPath(text)])[-1].as_posix()
    looked = f"{display_path(path)} does not exist, and no packaged preset is named {name!r} " \
             f"(in {presets_dir()})"
    close = suggest_presets(text)
    did_you_mean = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    if referrer is None:
        raise ConfigError(f"config file {looked}",
                          hint=f"{did_you_mean}a config is a TOML file or the name of a preset; "
                               "`det presets` lists them")
    raise ConfigError(f"{display_path(referrer)} extends {text!r}, but {looked}",
                      hint=f"{did_you_mean}paths in `extends` are relative to the file that names "
                           "them; a name is a packaged preset (`det presets` lists them)")


def suggest_presets(ref: str, n: int = 3) -> list[str]:
    """The preset names closest to ``ref`` (top-level presets before ``_base/`` ones)."""
    candidates = _name_candidates(ref)
    if not candidates:
        return []
    wanted = candidates[-1].as_posix()
    names = preset_names(bases=True)
    top = difflib.get_close_matches(wanted, preset_names(), n=n, cutoff=0.6)
    rest = [m for m in difflib.get_close_matches(wanted, names, n=n, cutoff=0.6) if m not in top]
    return (top + rest)[:n]
