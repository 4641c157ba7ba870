"""Read image datasets into a Dataset: sklearn's digits, class folders, an .npz, the downloadable sets."""

from pathlib import Path

import numpy as np

from runner.config.schema import DatasetConfig
from runner.data import downloads
from runner.data.dataset import MIN_ROWS, Dataset
from runner.errors import RunnerError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NAMES = ("digits", "images", *downloads.SOURCES)  # the dataset.name values read by this module


def load_images(cfg: DatasetConfig) -> Dataset:
    """The image dataset named by `cfg.name`, resized to `cfg.size` and cut to `cfg.limit` rows if set."""
    if cfg.name == "digits":
        images, codes, classes, origin = *_digits(), "digits"
    elif cfg.name == "images":
        images, codes, classes, origin = *_user_images(cfg), Path(cfg.path).name
    else:
        images, codes, classes = downloads.download(cfg.name, downloads.cache_root(cfg.cache))
        origin = cfg.name
    _need(len(images) >= MIN_ROWS, f"{origin} has {len(images)} images; runner needs at least {MIN_ROWS}")
    present = np.unique(codes)
    _need(len(present) >= 2, f"{origin} has one class ({classes[present[0]]!r}); classification needs at least 2 "
          "(add images of another class)")
    rows = _subset(codes, cfg.limit, len(classes))
    images = images[rows]
    if cfg.size is not None and tuple(images.shape[2:]) != tuple(cfg.size):  # a folder's are resized as read
        images = np.stack([_resize(image, cfg.size) for image in images])
    return Dataset(name=cfg.name, target="label", task="binary" if len(classes) == 2 else "multiclass",
                   features=None, y=codes[rows], classes=classes, images=images,
                   source_rows=rows if len(rows) < len(codes) else None)


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise RunnerError(message)


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """sklearn's bundled 8x8 digits as float32 in [0, 1] (its values are 0..16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[:, None] / 16).astype(np.float32)
    return images, digits.target.astype("int64"), [str(c) for c in digits.target_names]


def _subset(codes: np.ndarray, limit: int | None, n_classes: int) -> np.ndarray:
    """The rows kept: all, or a seeded stratified sample of `limit` rows, in their source order."""
    if limit is None or limit >= len(codes):
        return np.arange(len(codes))
    _need(limit >= max(MIN_ROWS, n_classes), f"dataset.limit={limit} is too small: keep at least "
          f"{max(MIN_ROWS, n_classes)} images ({MIN_ROWS} rows, one per class), or null for all")
    from sklearn.model_selection import train_test_split

    try:
        kept, _ = train_test_split(np.arange(len(codes)), train_size=limit, stratify=codes, random_state=0)
    except ValueError as err:  # a class with a single image cannot be stratified
        raise RunnerError(f"dataset.limit={limit} cannot keep every class's share ({err}); "
                          "set dataset.limit=null") from None
    return np.sort(kept)


def _user_images(cfg: DatasetConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    _need(cfg.path is not None, "dataset=images needs dataset.path=DIR (one sub-folder of images per class) "
          "or dataset.path=FILE.npz (arrays x and y)")
    path = Path(cfg.path).expanduser()
    _need(path.exists(), f"dataset.path={path} does not exist (set it to a folder with one sub-folder per class, "
          "or to an .npz file)")
    _need(path.is_dir() or path.is_file(), f"dataset.path={path} is not a regular file or a folder (set it to a "
          "folder with one sub-folder per class, or to an .npz file)")
    if path.is_dir():
        return _folder(path, cfg.size)
    _need(path.suffix == ".npz", f"dataset.path={path} is neither a folder nor an .npz file (use one sub-folder "
          "of PNG/JPEG images per class, or an .npz with arrays x and y)")
    return _npz(path)


def _folder(root: Path, size: list[int] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A folder of class sub-folders of PNG/JPEG images: uint8 [n, C, H, W], gray if every image is."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    _need(bool(classes), f"{root} has no class sub-folders; put each class's images in a sub-folder named after "
          "the class")
    files, codes = [], []
    for code, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        _need(bool(found), f"class folder {root / name} has no PNG/JPEG images (add some or remove the folder)")
        files += found
        codes += [code] * len(found)

    # Gray only when every image is: one colour image makes the whole set RGB, never the reverse.
    gray = all(_open(p, lambda image: image.mode in ("1", "L", "I", "I;16", "F")) for p in files)
    mode = "L" if gray else "RGB"
    resample = _bilinear()
    images = [_open(p, lambda image: np.asarray(image.convert(mode) if size is None else
                                                image.convert(mode).resize((size[1], size[0]), resample=resample)))
              for p in files]
    shapes = [image.shape[:2] for image in images]
    odd = next((i for i, shape in enumerate(shapes) if shape != shapes[0]), None)
    if odd is not None:
        raise RunnerError(f"images differ in size: {files[odd]} is {shapes[odd][0]}x{shapes[odd][1]} but {files[0]} "
                          f"is {shapes[0][0]}x{shapes[0][1]} (set dataset.size=[height, width] to resize them all)")
    stacked = np.stack(images)
    return (stacked[:, None] if gray else stacked.transpose(0, 3, 1, 2)), np.array(codes, "int64"), classes


def _open(path: Path, read):
    """`read(image)` of the image file at `path`; a file Pillow cannot decode is the user's to fix."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return read(image)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise RunnerError(f"cannot read image {path} ({' '.join(str(err).split())}); "
                          "replace or remove the file") from None


def _bilinear():
    from PIL import Image

    return Image.Resampling.BILINEAR


def _resize(image: np.ndarray, size: list[int]) -> np.ndarray:
    """One [C, H, W] image resized to `size` channel by channel, as a folder's images are, keeping its dtype."""
    from PIL import Image

    # A uint8 plane resizes as Pillow's "L" (0..255), a float32 one as "F" (values kept in [0, 1]).
    planes = [np.asarray(Image.fromarray(plane).resize((size[1], size[0]), resample=_bilinear()))
              for plane in image]
    return np.stack(planes).astype(image.dtype)


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """An .npz with x [n, H, W] or [n, H, W, C] (uint8, or floats in [0, 1]) and labels y (ints or strings)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            held = {key: arrays[key] for key in arrays.files}
    except ValueError as err:
        if "pickle" in str(err):
            raise RunnerError(f"{path} holds Python objects; save y as ints or strings (e.g. "
                              "np.savez(path, x=x, y=np.array(labels, dtype=str)))") from None
        raise RunnerError(f"cannot read {path} as .npz ({' '.join(str(err).split())})") from None
    except OSError as err:
        raise RunnerError(f"cannot read {path} as .npz ({' '.join(str(err).split())})") from None
    for key, what in (("x", "images as x [n,H,W] or [n,H,W,C]"), ("y", "one label per image as y")):
        _need(key in held, f"{path.name} has no array {key!r} (it holds: {', '.join(held) or 'nothing'}); "
              f"save {what}")
    x, y = held["x"], held["y"]
    _need(x.ndim in (3, 4) and (x.ndim == 3 or x.shape[3] in (1, 3)), f"x in {path.name} has shape {x.shape}; "
          "use [n, H, W] (gray) or [n, H, W, C] with C = 1 or 3 channels last")
    _need(y.ndim == 1 and len(y) == len(x), f"{path.name} has {len(x)} images in x but y has shape {y.shape}; "
          "give one label per image")
    images = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return _pixels(images, path.name), *_labels(y, path.name)


def _pixels(images: np.ndarray, file: str) -> np.ndarray:
    """uint8 kept; other integers within 0..255 as uint8; floats within [0, 1] as float32."""
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    kind = images.dtype.kind
    _need(kind in "iuf", f"x in {file} holds {images.dtype} values; use uint8 (0..255) or floats in [0, 1]")
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if kind in "iu":
        _need(low >= 0 and high <= 255, f"x in {file} holds integers from {low:g} to {high:g}; use 0..255")
        return images.astype(np.uint8)
    _need(bool(np.isfinite(images).all()) and low >= 0 and high <= 1, f"x in {file} holds floats from {low:g} "
          f"to {high:g}; scale them to [0, 1] (or save uint8 0..255)")
    return images.astype(np.float32)


def _labels(y: np.ndarray, file: str) -> tuple[np.ndarray, list[str]]:
    """Class codes in sorted label order (numbers numerically, so 2 before 10) and the labels as text."""
    if y.dtype.kind == "f":
        _need(bool(np.all(np.mod(y, 1) == 0)), f"y in {file} holds fractional numbers (e.g. {y[np.mod(y, 1) != 0][0]}); "
              "class labels must be integers or strings")
        y = y.astype("int64")
    _need(y.dtype.kind in "iuUSb", f"y in {file} holds {y.dtype} values; use integers or strings")
    values, codes = np.unique(y, return_inverse=True)
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]
    return codes.astype("int64"), labels
