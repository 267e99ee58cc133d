"""``NumClassCheckHook``: the datasets' class count must equal ``model.bbox_head.num_classes``.

K classes. Runs before the first iteration (MMDetection checks before every train and val
epoch; nothing can change in between here), on the training set and, when the run evaluates,
on the validation set, and raises the ConfigError of
:func:`~detcli.data.build.check_num_classes`, which names the setting and the dataset.
"""

from __future__ import annotations

from typing import Any

from detcli.data.build import check_num_classes
from detcli.engine.config import NumClassCheckHookConfig
from detcli.engine.hooks.base import VERY_HIGH, Hook
from detcli.errors import ConfigError
from detcli.registry import HOOKS


@HOOKS.register(NumClassCheckHookConfig)
class NumClassCheckHook(Hook):
    """Compare every dataset's ``num_classes`` with the head's before training starts."""

    priority = VERY_HIGH

    @classmethod
    def from_config(cls, cfg: NumClassCheckHookConfig, **derived: Any) -> NumClassCheckHook:
        return cls()

    def before_run(self, trainer: Any) -> None:
        head = getattr(trainer.model, "bbox_head", None)
        num_classes = getattr(head, "num_classes", None)
        if num_classes is None:
            raise ConfigError(f"NumClassCheckHook needs a model with bbox_head.num_classes; "
                              f"{type(trainer.model).__name__} has none",
                              hint="remove NumClassCheckHook from custom_hooks")
        check_num_classes(trainer.train_dataset, num_classes, "model.bbox_head.num_classes")
        if trainer.evaluates and trainer.val_dataset is not None:
            check_num_classes(trainer.val_dataset, num_classes, "model.bbox_head.num_classes")
