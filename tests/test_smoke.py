"""The vertical slice at the foundation level: a DSL model loads, summarizes and runs."""
import numpy as np

import cnncc
from cnncc.cli import main


def test_lenet5_loads_and_runs(examples_dir):
    g = cnncc.load_model(examples_dir / "lenet5.py")
    assert g.param_count() == 61_706
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    y = cnncc.reference(g, x)
    assert y.shape == (2, 10) and np.isfinite(y).all()


def test_summary_cli_shows_batch_symbol(examples_dir, capsys):
    assert main(["summary", str(examples_dir / "lenet5.py")]) == 0
    out = capsys.readouterr().out
    assert "(N, 6, 28, 28)" in out and "Total params: 61,706" in out
