"""The plot worker: a forked process draws the plots it is sent; when it fails, the run draws them itself."""

import numpy as np
import pandas as pd
import pytest

from runner.evaluate.plot_worker import PlotWorker
from runner.evaluate.report import write_reports

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")


def _history():
    return pd.DataFrame({"member": np.repeat([0, 1], 5), "epoch": np.tile(np.arange(5), 2),
                         "train/loss": np.linspace(1, 0.5, 10), "val/loss": np.linspace(1.1, 0.6, 10),
                         "lr": 0.01})


def test_worker_draws_what_it_is_sent(tmp_path):
    worker = PlotWorker.start()
    worker.send([("curves_plot", tmp_path / "curves.png", (_history(), None))])
    assert worker.finish()
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_worker_leaves_the_plots_to_the_run(tmp_path):
    results = {"task": "binary", "over": "61 test rows", "model": "mlp",
               "metrics": {"test/accuracy": {"mean": 0.8, "ci95": [0.7, 0.9], "n": 61}}}
    worker = PlotWorker.start()
    worker.send([("no_such_plot", tmp_path / "x.png", ())])  # the worker exits with an error
    written = write_reports(tmp_path, results, _history(), worker=worker)
    for name in ("report.png", "curves.png"):
        assert tmp_path / name in written and (tmp_path / name).stat().st_size > 0
    assert not (tmp_path / "x.png").exists()
