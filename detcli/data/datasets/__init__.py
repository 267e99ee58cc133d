"""Registered datasets: importing this package registers COCO, VOC and YOLO formats."""

from detcli.data.datasets.base import DatasetBaseConfig, DetDataset, FilterReport, LoadedAnnotations
from detcli.data.datasets.coco import CocoDataset, CocoDatasetConfig
from detcli.data.datasets.voc import VOC_CLASSES, VOCDataset, VOCDatasetConfig
from detcli.data.datasets.yolo import YOLODataset, YOLODatasetConfig

__all__ = [
    "CocoDataset", "CocoDatasetConfig", "DatasetBaseConfig", "DetDataset", "FilterReport",
    "LoadedAnnotations", "VOCDataset", "VOCDatasetConfig", "VOC_CLASSES", "YOLODataset",
    "YOLODatasetConfig",
]
