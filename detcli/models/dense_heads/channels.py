"""The one rule for a dense head's input channels: derived from the neck, checked if configured."""

from __future__ import annotations

from detcli.errors import ConfigError


def head_in_channels(head: str, configured: int | None, derived: int | None) -> int:
    """``derived`` (the neck's out_channels) when given, else ``configured``; both given must agree."""
    in_channels = derived if derived is not None else configured
    if in_channels is None:
        raise ConfigError(f"{head} needs in_channels: pass the neck's out_channels")
    if configured is not None and configured != in_channels:
        raise ConfigError(
            f"bbox_head.in_channels {configured} does not match the {in_channels} "
            "channels its input has; remove bbox_head.in_channels to derive it")
    return in_channels
