"""``NumClassCheckHook``: the datasets' class count must equal the head's ``num_classes``
(``model.bbox_head.num_classes``, or ``model.roi_head.bbox_head.num_classes`` for two stages).

K classes. Runs before the first iteration (MMDetection checks before every train and val
epoch; nothing can change in between here), on the training set and, when the run evaluates,
on the validation set, and raises the ConfigError of
:func:`~detcli.data.build.check_num_classes`, which names the setting and the dataset.
"""

from __future__ import annotations

from detcli.data.build import check_num_classes
from detcli.engine.config import NumClassCheckHookConfig
from detcli.engine.context import VERY_HIGH, Hook, TrainContext
from detcli.errors import ConfigError
from detcli.models.introspect import declared_num_classes, num_classes_key
from detcli.registry import HOOKS


@HOOKS.register(NumClassCheckHookConfig)
class NumClassCheckHook(Hook):
    """Compare every dataset's ``num_classes`` with the head's before training starts."""

    priority = VERY_HIGH

    def before_run(self, ctx: TrainContext) -> None:
        model = ctx.model
        num_classes = declared_num_classes(model)
        if num_classes is None:
            raise ConfigError(f"NumClassCheckHook needs a model with bbox_head.num_classes; "
                              f"{type(model).__name__} has none",
                              hint="remove NumClassCheckHook from custom_hooks")
        key = num_classes_key(model)
        check_num_classes(ctx.train_dataset, num_classes, key)
        if ctx.evaluates and ctx.val_dataset is not None:
            check_num_classes(ctx.val_dataset, num_classes, key)
