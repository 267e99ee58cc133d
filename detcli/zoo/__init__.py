"""``mmdet://NAME``: MMDetection 3.3's model-zoo checkpoints by name (see :mod:`detcli.zoo.mmdet`)."""
