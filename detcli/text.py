"""Small text helpers shared by the library's messages and the CLI."""

from __future__ import annotations

import os
from pathlib import Path


def is_loss_key(key: str) -> bool:
    """Whether an entry of a detector's loss dict is a loss the trainer sums (and the logs
    show among the losses): its name contains ``loss``, MMDetection's ``parse_losses`` rule --
    ``loss_cls``, Cascade R-CNN's per-stage ``s0.loss_cls``, the query detectors' ``d0.loss_cls``,
    ``enc_loss_cls`` (the encoder's proposals), DINO's ``dn_loss_cls`` / ``d0.dn_loss_cls`` (its
    denoising queries). ``acc`` and ``s0.acc`` are metrics, logged, not summed."""
    return "loss" in key


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 problem``, ``2 problems``, ``0 boxes`` (``many`` when adding "s" is wrong)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def display_path(path: Path) -> str:
    """``path`` relative to the current directory when it is under it (through a symlink as
    written, or resolved), else as given."""
    cwd = Path.cwd()
    for file, here in ((Path(os.path.abspath(path)), cwd), (path.resolve(), cwd.resolve())):
        try:
            return str(file.relative_to(here))
        except ValueError:
            continue
    return str(path)
