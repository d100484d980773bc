"""Rotated-and-scaled MNIST / Fashion-MNIST: generation (``python -m rstfast.data``) and loaders."""
from .loaders import MEAN, STD, RSDataset, make_loader, rs_datasets
from .generate import DATASETS, dataset_dir, load_split, prepare, verify
from .sources import SourceNotFoundError, load_idx_source, load_mnist_5k, raw_folder
from .warp import affine_warp

__all__ = ["DATASETS", "MEAN", "STD", "RSDataset", "SourceNotFoundError", "affine_warp", "dataset_dir",
           "load_idx_source", "load_mnist_5k", "load_split", "make_loader", "prepare", "raw_folder",
           "rs_datasets", "verify"]
