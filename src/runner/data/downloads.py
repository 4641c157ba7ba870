"""Fetch MNIST, Fashion-MNIST and CIFAR-10 from their public sources into a cache, and read their files."""

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner.errors import RunnerError
from runner.rundir.folder import write_atomic

TIMEOUT_S = 30  # per connection attempt; a stalled mirror must not hang a run
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


@dataclass(frozen=True)
class Source:
    """Where a dataset's files are published: base URLs tried in order, and each file's MD5 as published."""

    mirrors: tuple[str, ...]
    md5: dict[str, str]


SOURCES = {
    "mnist": Source(("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
                    dict(zip(MNIST_FILES, ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
                                           "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")))),
    "fashion_mnist": Source(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
                            dict(zip(MNIST_FILES, ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                                                   "bef4ecab320f06d8554ea6380940ec79",
                                                   "bb300cfdad3c16e7a12a480ee83cd310")))),
    "cifar10": Source(("https://www.cs.toronto.edu/~kriz/",),
                      {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}),
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def cache_root(setting: str | None) -> Path:
    """The cache folder: dataset.cache if set, else $RUNNER_CACHE, else ~/.cache/runner."""
    return Path(setting or os.environ.get("RUNNER_CACHE") or "~/.cache/runner").expanduser()


def download(name: str, root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A downloadable dataset's images [n, C, H, W] uint8, class codes and labels: train then test rows."""
    folder = fetch(name, root)
    if name == "cifar10":
        images, labels, classes = read_cifar10(folder / "cifar-10-python.tar.gz")
    else:
        images, labels = read_mnist(folder)
        classes = FASHION_CLASSES if name == "fashion_mnist" else [str(d) for d in range(10)]
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(classes):
        raise _corrupt(folder, ValueError(f"labels outside 0..{len(classes) - 1}"))
    return images, labels, classes


def fetch(name: str, root: Path) -> Path:
    """The folder `root/name` holding every file of `name`, downloading those not there yet."""
    source, folder = SOURCES[name], root / name
    missing = [file for file in source.md5 if not (folder / file).is_file()]
    for file in missing:
        reasons = []
        for base in source.mirrors:
            try:
                _download(base + file, folder / file, source.md5[file])
                break
            except (OSError, ValueError) as err:  # URLError and timeouts are OSErrors; ValueError: bad checksum
                reasons.append(f"{base + file}: {_one_line(err)}")
        else:
            urls = " ".join(source.mirrors[0] + f for f in source.md5 if not (folder / f).is_file())
            raise RunnerError(f"cannot download {name} ({reasons[-1]}); without a network, download {urls} and put the "
                              f"files in {folder}/ (or point dataset.cache=DIR or RUNNER_CACHE at a folder "
                              f"holding {name}/)")
    return folder


def _download(url: str, dest: Path, md5: str) -> None:
    """Copy `url` to `dest` if its MD5 is `md5`; written atomically (rundir.folder.write_atomic), so `dest` is
    whole or absent."""
    from runner.console import console

    dest.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"downloading {url}", soft_wrap=True, markup=False, highlight=False)

    def copy(out) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != md5:  # raised inside the write: the file is never renamed into place
            raise ValueError(f"the file's MD5 is {digest.hexdigest()}, not the published {md5}")

    write_atomic(dest, copy)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _corrupt(path: Path, err: BaseException) -> RunnerError:
    return RunnerError(f"cannot read {path} ({_one_line(err)}); delete it so that runner downloads it again")


def read_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-format idx .gz files: images [n, 1, 28, 28] uint8 and labels int64, the train rows then the test rows."""
    parts = []
    for prefix in ("train", "t10k"):
        images, labels = (_idx(folder / f"{prefix}-{kind}.gz") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise _corrupt(folder / f"{prefix}-images-idx3-ubyte.gz",
                           ValueError(f"{images.shape} images do not match {labels.shape} labels"))
        parts.append((images, labels))
    return (np.concatenate([x for x, _ in parts])[:, None], np.concatenate([y for _, y in parts]).astype("int64"))


def _idx(path: Path) -> np.ndarray:
    """One idx file of unsigned bytes (magic 0x0000 08 <ndim>, big-endian int32 sizes, then the data)."""
    try:
        with gzip.open(path, "rb") as file:
            data = file.read()
        if data[:3] != b"\x00\x00\x08":
            raise ValueError("not an idx file of unsigned bytes")
        ndim = data[3]
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as err:
        raise _corrupt(path, err) from None


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers only: a pickle can run code, this one cannot."""

    # _codecs.encode is how protocol-2 pickles written by Python 3 spell a bytes object.
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar10(archive: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-10's python tar.gz: images [n, 3, 32, 32] uint8, labels int64 (5 train batches, then test), names."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            absent = [b for b in (*CIFAR_BATCHES, "batches.meta") if b not in members]
            if absent:
                raise ValueError(f"the archive has no {', '.join(absent)}")
            batches = [_ArraysOnly(tar.extractfile(members[b]), encoding="bytes").load() for b in CIFAR_BATCHES]
            meta = _ArraysOnly(tar.extractfile(members["batches.meta"]), encoding="bytes").load()
        # Each row is 1024 red, 1024 green, then 1024 blue bytes, each plane row-major 32x32.
        images = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        labels = np.concatenate([np.asarray(b[b"labels"], dtype="int64") for b in batches])
        classes = [name.decode() for name in meta[b"label_names"]]
    except (OSError, EOFError, ValueError, KeyError, TypeError, tarfile.TarError, pickle.UnpicklingError) as err:
        raise _corrupt(archive, err) from None
    return images, labels, classes
