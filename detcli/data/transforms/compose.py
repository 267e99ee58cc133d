"""A pipeline: transforms applied in order to one results dict.

Each step is ``__call__(results: dict) -> dict | None``. ``None`` means "this sample cannot be
used, draw another" (RandomCrop with no GT left, as in MMDetection); the pipeline stops and
returns None, and the dataset picks another index. Any exception inside a step comes out as a
DataError that names the step's type and the image file; the original exception is chained
(a ConfigError, a step refusing the pipeline it is in, passes through as it is).

A mixed-image step (:class:`~detcli.data.transforms.mixing.MixImageTransform`: Mosaic, MixUp)
is called as ``mix(results, draws)``: ``draws`` loads other images of the dataset named by
``results["mix_source"]`` through this pipeline's loading steps, the steps before the first
mixed-image step (:mod:`detcli.data.transforms.mixing`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Union

from detcli.config.schema import Schema
from detcli.data.transforms.mixing import MixDraws, MixImageTransform
from detcli.errors import ConfigError, DataError
from detcli.registry import TRANSFORMS, ensure_current

log = logging.getLogger(__name__)

Transform = Callable[[dict[str, Any]], Union[dict[str, Any], None]]
TransformSpec = Union[Schema, dict[str, Any], Transform]


def build_transform(spec: TransformSpec) -> tuple[str, Transform]:
    """(type name, callable) for a config model, a config dict with ``type``, or a callable."""
    if isinstance(spec, Schema):
        return spec.type, TRANSFORMS.build(spec)  # type: ignore[attr-defined]
    if isinstance(spec, dict):
        ensure_current()
        if "type" not in spec:
            raise DataError(f"transform config has no 'type': {spec}; "
                            f"registered: {', '.join(TRANSFORMS.names())}")
        cfg = TRANSFORMS.config(spec["type"]).model_validate(spec)
        return cfg.type, TRANSFORMS.build(cfg)  # type: ignore[attr-defined]
    if callable(spec):
        return type(spec).__name__, spec
    raise TypeError(f"a transform must be a config model, a dict or a callable, got {spec!r}")


def image_file(results: dict[str, Any]) -> str:
    """The image file a results dict is about, for messages."""
    if results.get("filename"):
        return str(results["filename"])
    info = results.get("img_info") or {}
    return str(info.get("filename") or info.get("file_name") or "<unknown image>")


class Compose:
    """Apply ``transforms`` (configs, config dicts or callables) in order."""

    def __init__(self, transforms: Iterable[TransformSpec]) -> None:
        built = [build_transform(t) for t in transforms]
        self.names = [name for name, _ in built]
        self.transforms = [t for _, t in built]
        # the loading steps: those before the first mixed-image step
        self.mix_start = next((k for k, t in enumerate(self.transforms)
                               if isinstance(t, MixImageTransform)), len(self.transforms))

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose([\n  {inner}\n])"

    def __len__(self) -> int:
        return len(self.transforms)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        return self._run(results, len(self.transforms))

    def loading(self, results: dict[str, Any]) -> dict[str, Any] | None:
        """``results`` through the loading steps only (what a mixed-image step mixes in)."""
        return self._run(results, self.mix_start)

    def _run(self, results: dict[str, Any], end: int) -> dict[str, Any] | None:
        for name, transform in zip(self.names[:end], self.transforms[:end]):
            try:
                if isinstance(transform, MixImageTransform):
                    out = transform.mix(results, MixDraws(results.get("mix_source"),
                                                          self.loading, name))
                else:
                    out = transform(results)
            except ConfigError:
                raise
            except DataError as exc:
                if getattr(exc, "transform", None):  # raised by a nested pipeline, already named
                    raise
                raise _named_error(name, results, str(exc), exc.hint) from exc
            except Exception as exc:  # noqa: BLE001 - re-raised as DataError, chained
                raise _named_error(name, results, f"{type(exc).__name__}: {exc}", None) from exc
            if out is None:
                log.debug("%s rejected %s; the dataset draws another image", name, image_file(results))
                return None
            results = out
        return results


def _named_error(name: str, results: dict[str, Any], reason: str, hint: str | None) -> DataError:
    err = DataError(f"transform {name} failed on {image_file(results)}: {reason}", hint=hint)
    err.transform = name  # type: ignore[attr-defined]
    return err
