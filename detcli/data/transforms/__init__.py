"""The registered data transforms; importing this package registers all of them.

A pipeline is a list of transform configs (``data.train.pipeline``), each keyed on ``type``,
applied in order by :class:`Compose` to one results dict (keys as in MMDetection).
"""

from detcli.data.transforms.compose import Compose, build_transform
from detcli.data.transforms.crop import RandomCrop
from detcli.data.transforms.formatting import Collect, DefaultFormatBundle, ImageToTensor
from detcli.data.transforms.geometric import Pad, RandomFlip, Resize
from detcli.data.transforms.loading import LoadAnnotations, LoadImageFromFile
from detcli.data.transforms.photometric import Normalize, PhotoMetricDistortion
from detcli.data.transforms.test_time import MultiScaleFlipAug

__all__ = [
    "Collect", "Compose", "DefaultFormatBundle", "ImageToTensor", "LoadAnnotations",
    "LoadImageFromFile", "MultiScaleFlipAug", "Normalize", "Pad", "PhotoMetricDistortion",
    "RandomCrop", "RandomFlip", "Resize", "build_transform",
]
