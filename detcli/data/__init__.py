"""The data layer: datasets, transforms, collate and loaders.

Kept light on purpose (``det --help`` should not import torch): importing
``detcli.data.datasets`` and ``detcli.data.transforms`` registers the dataset and transform
types, and ``detcli.components`` does both.
"""
