"""Rotated-and-scaled MNIST / Fashion-MNIST: generation (``python -m rstfast.data``) and loaders."""
from .loaders import BACKGROUND, MEAN, STD, RSDataset, make_loader, normalize, rs_datasets
from .generate import (DATASETS, DatasetFolderError, dataset_dir, load_split, prepare, read_manifest,
                       verify)
from ..cli import DataError, UsageError
from .sources import (Pool, SourceHashError, SourceNotFoundError, load_mnist_5k,
                      load_source, locate, raw_folder)
from .warp import affine_warp

__all__ = ["BACKGROUND", "DATASETS", "DataError", "DatasetFolderError", "MEAN", "Pool", "RSDataset", "STD",
           "SourceHashError", "SourceNotFoundError", "UsageError", "affine_warp", "dataset_dir",
           "load_mnist_5k",
           "load_source", "load_split", "locate", "make_loader", "normalize", "prepare", "raw_folder",
           "read_manifest", "rs_datasets", "verify"]
