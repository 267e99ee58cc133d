"""The training and testing engine: ``detcli.engine.trainer.train_detector`` trains,
``detcli.engine.checkpoint_eval.evaluate_checkpoint`` tests a checkpoint. Importing
``detcli.engine.hooks`` registers the hook classes (``HOOKS``; :mod:`detcli.components` does)."""
