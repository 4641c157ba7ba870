"""The wheel ships every bundled file (each config under conf/, each file under data/), and a wheel installed on its
own trains each bundled dataset from its own copy, not from a checkout."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where the wheel puts each bundled folder of a checkout (pyproject.toml's force-include, read by runner.paths).
SHIPPED = {"conf": "runner/conf", "data": "runner/bundled"}


def _bundled() -> dict[str, Path]:
    """Every file a checkout bundles, by its path inside the wheel."""
    return {f"{inside}/{path.relative_to(ROOT / folder).as_posix()}": path
            for folder, inside in SHIPPED.items() for path in sorted((ROOT / folder).rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built by its own build backend in-process (no network, no build isolation)."""
    builders = pytest.importorskip("hatchling.builders.wheel", reason="the dev extra's hatchling builds the wheel")
    out = tmp_path_factory.mktemp("wheel")
    (built,) = builders.WheelBuilder(str(ROOT)).build(directory=str(out), versions=["standard"])
    return Path(built)


def test_the_wheel_holds_every_config_and_bundled_file_as_the_checkout_has_it(wheel):
    bundled = _bundled()
    assert "runner/bundled/heart.csv" in bundled and "runner/conf/config.yaml" in bundled
    with zipfile.ZipFile(wheel) as archive:
        missing = sorted(set(bundled) - set(archive.namelist()))
        assert not missing, f"{wheel.name} lacks {missing}: add them to pyproject.toml's force-include"
        for inside, path in bundled.items():
            assert archive.read(inside) == path.read_bytes(), inside


@pytest.mark.slow  # pip, then a fresh process per dataset: 4 s on two idle cores (the listing above is the cheap check)
def test_an_installed_wheel_trains_each_bundled_dataset_from_its_own_copy(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}  # before the editable install's path to src/
    where = subprocess.run([sys.executable, "-c", "import runner.paths as p; print(p.__file__); "
                            "print(p.conf_dir()); print(p.bundled_data('heart.csv'))"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(path).is_relative_to(site) for path in where), where
    datasets = [path.stem for path in sorted((ROOT / "data").glob("*.csv"))]
    assert "heart" in datasets
    for name in datasets:
        run = tmp_path / name
        subprocess.run([sys.executable, "-m", "runner.commands.cli", "train", f"dataset={name}", "trainer.epochs=1",
                        "trainer.progress=false", "plots=false", f"hydra.run.dir={run}"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
        assert json.loads((run / "results.json").read_text())["dataset"] == name
