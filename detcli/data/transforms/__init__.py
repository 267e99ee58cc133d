"""The registered data transforms; importing this package registers all of them.

A pipeline is a list of transform configs (``data.train.pipeline``), each keyed on ``type``,
applied in order by :class:`Compose` to one results dict (keys as in MMDetection).
"""

from detcli.data.transforms.affine import RandomAffine
from detcli.data.transforms.choice import RandomChoice
from detcli.data.transforms.colour import YOLOXHSVRandomAug
from detcli.data.transforms.compose import Compose, build_transform
from detcli.data.transforms.crop import RandomCrop
from detcli.data.transforms.filtering import FilterAnnotations
from detcli.data.transforms.formatting import Collect, DefaultFormatBundle, ImageToTensor
from detcli.data.transforms.geometric import Pad, RandomFlip, Resize
from detcli.data.transforms.loading import LoadAnnotations, LoadImageFromFile
from detcli.data.transforms.mix import CachedMixUp, CachedMosaic, MixUp, Mosaic
from detcli.data.transforms.photometric import Normalize, PhotoMetricDistortion
from detcli.data.transforms.random_resize import RandomChoiceResize, RandomResize
from detcli.data.transforms.test_time import MultiScaleFlipAug

__all__ = [
    "CachedMixUp", "CachedMosaic", "Collect", "Compose", "DefaultFormatBundle",
    "FilterAnnotations", "ImageToTensor", "LoadAnnotations", "LoadImageFromFile", "MixUp",
    "Mosaic", "MultiScaleFlipAug", "Normalize", "Pad", "PhotoMetricDistortion", "RandomAffine",
    "RandomChoice", "RandomChoiceResize", "RandomCrop", "RandomFlip", "RandomResize", "Resize",
    "YOLOXHSVRandomAug", "build_transform",
]
