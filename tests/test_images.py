"""Image sources read fixtures the tests write in the real formats: PNG/JPEG folders, .npz, idx .gz, CIFAR pickles."""

import gzip
import hashlib
import io
import json
import pickle
import struct
import tarfile
import urllib.error

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from runner.commands.cli import main
from runner.config.checks import validate
from runner.config.schema import Config, DatasetConfig
from runner.data import downloads, load_dataset
from runner.errors import RunnerError
from helpers import assert_one_line_errors
from conftest import shipped

MNIST = downloads.MNIST_FILES


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs offline: a download attempt fails as it does without a network."""
    calls = []

    def refuse(url, timeout):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(downloads.urllib.request, "urlopen", refuse)
    return calls


def images_cfg(path, **kw) -> DatasetConfig:
    return DatasetConfig(name="images", path=str(path), **kw)


def write_idx(path, array: np.ndarray) -> None:
    """An idx file as MNIST publishes it: magic 0x0000 08 <ndim>, big-endian sizes, bytes; gzipped."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def mnist_fixture(folder, n_train=8, n_test=4):
    """Idx files of `n_train` + `n_test` 28x28 images whose pixels encode (row, y, x); labels row % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    n = n_train + n_test
    images = ((np.arange(n)[:, None, None] * 7 + np.arange(28)[:, None] * 3 + np.arange(28)) % 256).astype(np.uint8)
    labels = (np.arange(n) * 3 % 10).astype(np.uint8)
    for prefix, rows in (("train", slice(0, n_train)), ("t10k", slice(n_train, n))):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[rows])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[rows])
    return images, labels


def cifar_fixture(archive, per_batch=2):
    """A cifar-10-python.tar.gz: 5 train batches and a test batch of `per_batch` rows, and batches.meta."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    n = 6 * per_batch
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [(3 * i + 1) % 10 for i in range(n)]
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with tarfile.open(archive, "w:gz") as tar:
        def add(name, obj):
            blob = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for b, name in enumerate(downloads.CIFAR_BATCHES):
            rows = slice(b * per_batch, (b + 1) * per_batch)
            add(name, {b"batch_label": name.encode(), b"labels": labels[rows], b"data": data[rows],
                       b"filenames": [b"x.png"] * per_batch})
        add("batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072})
    return data, np.array(labels)


def test_digits_equal_sklearn():
    ds = load_dataset(shipped("dataset", "digits", DatasetConfig))
    digits = load_digits()
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == np.float32 and ds.features is None
    np.testing.assert_array_equal(ds.images[:, 0] * 16, digits.images)
    np.testing.assert_array_equal(ds.y, digits.target)
    assert ds.classes == [str(d) for d in range(10)] and ds.task == "multiclass" and ds.target == "label"
    assert ds.name == "digits" and list(ds.rows[:3]) == [0, 1, 2]


def test_gray_class_folders(tmp_path):
    pixels = {}
    for k, name in enumerate(("dog", "ant", "cat")):  # read in sorted order: ant, cat, dog
        (tmp_path / name).mkdir()
        for i in range(4):
            array = (np.arange(30).reshape(5, 6) + 10 * i + 50 * k).astype(np.uint8)
            Image.fromarray(array).save(tmp_path / name / f"{i}.png")
            pixels[(name, i)] = array
        (tmp_path / name / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()  # hidden folders are not classes
    ds = load_dataset(images_cfg(tmp_path))
    assert ds.classes == ["ant", "cat", "dog"] and ds.task == "multiclass"
    assert ds.images.shape == (12, 1, 5, 6) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.y, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(ds.images[5, 0], pixels[("cat", 1)])
    assert ds.images[11, 0, 4, 5] == pixels[("dog", 3)][4, 5] == 29 + 30 + 0


def test_one_colour_image_makes_the_folder_rgb(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    for i in range(5):
        Image.new("L", (8, 8), 128).save(tmp_path / "a" / f"{i}.jpg", quality=95)
        Image.new("RGBA", (8, 8), (10, 200, 30, 90)).save(tmp_path / "b" / f"{i}.PNG")
    ds = load_dataset(images_cfg(tmp_path, size=[4, 6]))  # [height, width]
    assert ds.images.shape == (10, 3, 4, 6) and ds.images.dtype == np.uint8 and ds.task == "binary"
    assert np.abs(ds.images[:5].astype(int) - 128).max() <= 1  # JPEG: a flat gray decodes to within 1
    np.testing.assert_array_equal(ds.images[5:, :, 0, 0], np.tile([10, 200, 30], (5, 1)))  # alpha dropped


def test_npz_and_folder_resize_alike(tmp_path):
    """An array is resized plane by plane exactly as Pillow resizes the same image read from a folder."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(12, 9, 7, 3), dtype=np.uint8)
    y = np.array(["b", "a"] * 6)
    for i, image in enumerate(x):
        (tmp_path / "dir" / y[i]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "dir" / y[i] / f"{i:02d}.png")
    np.savez(tmp_path / "x.npz", x=x[np.r_[1:12:2, 0:12:2]], y=y[np.r_[1:12:2, 0:12:2]])  # folder order: a's, b's
    folder = load_dataset(images_cfg(tmp_path / "dir", size=[4, 3]))
    arrays = load_dataset(images_cfg(tmp_path / "x.npz", size=[4, 3]))
    assert folder.images.shape == arrays.images.shape == (12, 3, 4, 3)
    np.testing.assert_array_equal(folder.images, arrays.images)
    np.testing.assert_array_equal(folder.y, arrays.y)


def test_npz_gray_with_string_labels(tmp_path):
    x = (np.arange(12 * 4 * 5).reshape(12, 4, 5) % 256).astype(np.uint8)
    y = np.array(["dog", "cat", "ant"] * 4)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    ds = load_dataset(images_cfg(tmp_path / "set.npz"))
    assert ds.classes == ["ant", "cat", "dog"] and ds.images.shape == (12, 1, 4, 5)
    np.testing.assert_array_equal(ds.y, [2, 1, 0] * 4)
    assert ds.images[3, 0, 2, 1] == x[3, 2, 1] == (3 * 20 + 2 * 5 + 1)


def test_npz_channels_last_floats_and_numeric_labels(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.random((12, 4, 5, 3))
    np.savez(tmp_path / "set.npz", x=x, y=np.array([10, 2, 2] * 4))
    ds = load_dataset(images_cfg(tmp_path / "set.npz"))
    assert ds.classes == ["2", "10"] and ds.task == "binary"  # numbers sort numerically
    np.testing.assert_array_equal(ds.y, [1, 0, 0] * 4)
    assert ds.images.shape == (12, 3, 4, 5) and ds.images.dtype == np.float32
    np.testing.assert_array_equal(ds.images, x.transpose(0, 3, 1, 2).astype(np.float32))
    small = load_dataset(images_cfg(tmp_path / "set.npz", size=[2, 2]))
    assert small.images.dtype == np.float32 and small.images.shape == (12, 3, 2, 2)
    assert 0 <= small.images.min() and small.images.max() <= 1


@pytest.mark.parametrize("name,classes", [("mnist", [str(d) for d in range(10)]),
                                          ("fashion_mnist", downloads.FASHION_CLASSES)])
def test_mnist_format_from_the_cache(tmp_path, no_network, name, classes):
    images, labels = mnist_fixture(tmp_path / name)
    ds = load_dataset(DatasetConfig(name=name, cache=str(tmp_path)))
    assert no_network == []  # the cached files were read, nothing was downloaded
    assert ds.images.shape == (12, 1, 28, 28) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[:, 0], images)  # train rows, then test rows
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.classes == classes and ds.classes[ds.y[1]] == classes[3]
    assert ds.images[9, 0, 2, 5] == (9 * 7 + 2 * 3 + 5)


def test_cache_from_the_environment(tmp_path, monkeypatch):
    mnist_fixture(tmp_path / "env" / "mnist")
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "env"))
    assert downloads.cache_root(None) == tmp_path / "env"
    assert downloads.cache_root(str(tmp_path / "set")) == tmp_path / "set"  # dataset.cache wins
    assert load_dataset(DatasetConfig(name="mnist")).images.shape == (12, 1, 28, 28)


def test_cifar10_from_the_cache(tmp_path):
    data, labels = cifar_fixture(tmp_path / "cifar10" / "cifar-10-python.tar.gz")
    ds = load_dataset(shipped("dataset", "cifar10", DatasetConfig, cache=str(tmp_path)))
    assert ds.images.shape == (12, 3, 32, 32) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and len(ds.classes) == 10
    # A row is 1024 red, 1024 green, 1024 blue bytes, each row-major: pixel (y=2, x=5) of blue is byte 2048+69.
    assert ds.images[11, 2, 2, 5] == data[11, 2048 + 2 * 32 + 5]
    np.testing.assert_array_equal(ds.images[4, 1], data[4, 1024:2048].reshape(32, 32))


def test_cifar_pickle_cannot_run_code(tmp_path):
    with tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as tar:
        blob = pickle.dumps(print)  # any callable a pickle names is refused, builtins included
        for name in (*downloads.CIFAR_BATCHES, "batches.meta"):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(RunnerError, match="refusing to load builtins.print"):
        downloads.read_cifar10(tmp_path / "evil.tar.gz")


def test_offline_without_a_cache_says_where_to_put_the_files(tmp_path, no_network):
    with pytest.raises(RunnerError) as info:
        load_dataset(DatasetConfig(name="mnist", cache=str(tmp_path)))
    message = str(info.value)
    assert "\n" not in message and "network is unreachable" in message
    for file in MNIST:
        assert f"https://ossci-datasets.s3.amazonaws.com/mnist/{file}" in message
    assert f"put the files in {tmp_path / 'mnist'}/" in message
    assert len(no_network) == 2  # both mirrors of the first file were tried, then runner stopped
    assert list((tmp_path / "mnist").iterdir()) == []  # no partial file left behind


def test_offline_names_only_the_missing_files(tmp_path):
    mnist_fixture(tmp_path / "mnist")
    for file in MNIST[2:]:
        (tmp_path / "mnist" / file).unlink()
    with pytest.raises(RunnerError) as info:
        load_dataset(DatasetConfig(name="mnist", cache=str(tmp_path)))
    named = [file for file in MNIST if file in str(info.value)]
    assert named == list(MNIST[2:])


def serve(monkeypatch, files: dict, failing: tuple = ()):
    """Answer urlopen from `files` (URL -> bytes); URLs starting with one of `failing` time out."""
    served = []

    def urlopen(url, timeout):
        served.append(url)
        if url.startswith(failing):
            raise TimeoutError("timed out")
        return io.BytesIO(files[url])

    monkeypatch.setattr(downloads.urllib.request, "urlopen", urlopen)
    return served


def test_download_verifies_and_writes_whole_files(tmp_path, monkeypatch):
    images, labels = mnist_fixture(tmp_path / "published")
    blobs = {f: (tmp_path / "published" / f).read_bytes() for f in MNIST}
    source = downloads.Source(("https://a.example/", "https://b.example/"),
                              {f: hashlib.md5(b).hexdigest() for f, b in blobs.items()})
    monkeypatch.setitem(downloads.SOURCES, "mnist", source)
    served = serve(monkeypatch, {"https://b.example/" + f: b for f, b in blobs.items()}, failing=("https://a.",))
    ds = load_dataset(DatasetConfig(name="mnist", cache=str(tmp_path / "cache")))
    assert len(served) == 8  # each file: the first mirror timed out, the second answered
    np.testing.assert_array_equal(ds.images[:, 0], images)
    np.testing.assert_array_equal(ds.y, labels)
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(MNIST)
    served.clear()
    load_dataset(DatasetConfig(name="mnist", cache=str(tmp_path / "cache")))
    assert served == []  # cached now

    monkeypatch.setitem(downloads.SOURCES, "mnist", downloads.Source(("https://b.example/",), {
        f: "0" * 32 for f in MNIST}))
    with pytest.raises(RunnerError, match="not the published 0{32}") as info:
        load_dataset(DatasetConfig(name="mnist", cache=str(tmp_path / "other")))
    assert "\n" not in str(info.value)
    assert list((tmp_path / "other" / "mnist").iterdir()) == []  # a bad download is not kept


def test_limit_keeps_a_stratified_subset_with_source_rows():
    full = load_dataset(DatasetConfig(name="digits"))
    ds = load_dataset(DatasetConfig(name="digits", limit=300))
    assert len(ds.y) == 300 and ds.images.shape == (300, 1, 8, 8)
    rows = ds.rows
    assert np.all(np.diff(rows) > 0) and rows[-1] < 1797
    np.testing.assert_array_equal(ds.images, full.images[rows])
    np.testing.assert_array_equal(ds.y, full.y[rows])
    share = np.bincount(full.y) / 1797 * 300  # each class keeps its share, to within one image
    assert np.abs(np.bincount(ds.y, minlength=10) - share).max() < 1
    again = load_dataset(DatasetConfig(name="digits", limit=300))
    np.testing.assert_array_equal(again.rows, rows)  # the subset is seeded
    assert load_dataset(DatasetConfig(name="digits", limit=5000)).source_rows is None  # all rows


def _errors(tmp_path):
    def folder(name, classes, make):
        root = tmp_path / name
        for c in classes:
            (root / c).mkdir(parents=True)
            make(root / c)
        root.mkdir(exist_ok=True)
        return root

    def pngs(count, size=(4, 4)):
        return lambda d: [Image.new("L", size, 9).save(d / f"{i}.png") for i in range(count)]

    def npz(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    garbage = folder("garbage", ["a", "b"], pngs(6))
    (garbage / "b" / "3.png").write_bytes(b"not a png")
    mixed = folder("mixed", ["a", "b"], pngs(6))
    Image.new("L", (5, 4), 9).save(mixed / "b" / "wide.png")
    corrupt = tmp_path / "cache" / "mnist"
    mnist_fixture(corrupt)
    (corrupt / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    wrong = tmp_path / "wrong" / "fashion_mnist"
    mnist_fixture(wrong)
    write_idx(wrong / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 12, 3], np.uint8))
    x = np.zeros((12, 4, 4), np.uint8)
    return [
        (images_cfg(tmp_path / "nope"), "dataset.path=" + str(tmp_path / "nope") + " does not exist"),
        (DatasetConfig(name="images"), "dataset=images needs dataset.path=DIR"),
        (images_cfg(folder("empty", [], None)), "has no class sub-folders"),
        (images_cfg(folder("hollow", ["a", "b"], lambda d: (d / "x.txt").write_text(""))),
         "class folder " + str(tmp_path / "hollow" / "a") + " has no PNG/JPEG images"),
        (images_cfg(garbage), "cannot read image " + str(garbage / "b" / "3.png")),
        (images_cfg(mixed), "images differ in size: " + str(mixed / "b" / "wide.png") + " is 4x5 but"),
        (images_cfg(folder("few", ["a", "b"], pngs(3))), "few has 6 images; runner needs at least 10"),
        (images_cfg(folder("single", ["a"], pngs(12))), "single has one class ('a'); classification needs at least 2"),
        (images_cfg(npz("noy.npz", x=x)), "noy.npz has no array 'y' (it holds: x)"),
        (images_cfg(npz("short.npz", x=x, y=np.arange(11))), "has 12 images in x but y has shape (11,)"),
        (images_cfg(npz("hot.npz", x=x + 2.0, y=np.arange(12) % 2)), "x in hot.npz holds floats from 2 to 2"),
        (images_cfg(npz("flat.npz", x=x.reshape(12, 16), y=np.arange(12) % 2)), "x in flat.npz has shape (12, 16)"),
        (images_cfg(npz("obj.npz", x=x, y=np.array([None, "a"] * 6, dtype=object))), "holds Python objects"),
        (images_cfg(npz("ok.npz", x=x, y=np.arange(12) % 2), limit=4), "dataset.limit=4 is too small"),
        (DatasetConfig(name="digits", limit=9), "dataset.limit=9 is too small: keep at least 10 images"),
        (DatasetConfig(name="mnist", cache=str(tmp_path / "cache")),
         "cannot read " + str(corrupt / "t10k-labels-idx1-ubyte.gz")),
        (DatasetConfig(name="fashion_mnist", cache=str(tmp_path / "wrong")), "(labels outside 0..9)"),
        (DatasetConfig(name="heart", target="num", size=[8, 8]), "dataset.size and dataset.limit apply to image"),
    ]


def test_image_errors_are_one_line_runner_errors(tmp_path):
    assert_one_line_errors(_errors(tmp_path), load_dataset)


@pytest.mark.parametrize("key,value,needle", [
    ("size", [0, 8], "dataset.size=[0, 8] is not valid: use [height, width]"),
    ("size", [8], "dataset.size=[8] is not valid"),
    ("limit", 0, "dataset.limit=0 is not valid"),
])
def test_size_and_limit_are_checked_up_front(key, value, needle):
    cfg = Config()
    setattr(cfg.dataset, key, value)
    with pytest.raises(RunnerError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        validate(cfg)


@pytest.mark.parametrize("name", ["digits", "images", "mnist", "fashion_mnist", "cifar10"])
def test_shipped_configs_name_their_source(name):
    cfg = shipped("dataset", name, DatasetConfig)
    assert cfg.name == name and cfg.size is None and cfg.limit is None


def test_cli_reports_a_missing_image_path_in_one_line(tmp_path, capsys):
    assert main(["train", "dataset=images", f"hydra.run.dir={tmp_path}/run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset=images needs dataset.path=DIR" in err
    assert not (tmp_path / "run").exists()


def test_a_limited_run_names_rows_of_the_full_set(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "dataset=digits", "dataset.limit=100", "trainer.epochs=2", "trainer.progress=false",
                 f"hydra.run.dir={run}"]) == 0
    kept = load_dataset(DatasetConfig(name="digits", limit=100)).rows
    target = load_digits().target
    predictions = pd.read_csv(run / "predictions.csv")
    assert set(predictions["row"]) <= set(kept)
    np.testing.assert_array_equal(predictions["y_true"], target[predictions["row"]])
    split = json.loads((run / "split_indices.json").read_text())[0]
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(kept)
