"""The training and testing engine. Importing it registers the hook classes (``HOOKS``);
``detcli.engine.trainer.train_detector`` trains, ``detcli.engine.evaluation.evaluate`` tests."""

import detcli.engine.hooks  # noqa: F401  (registers NumClassCheckHook, EMAHook, ...)
