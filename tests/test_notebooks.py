"""Every notebook runs top to bottom (code cells executed in order, figures on the Agg backend)."""

import json
from pathlib import Path

import matplotlib
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(notebook.parents[1]))
    cells = json.loads(notebook.read_text())["cells"]
    namespace = {"__name__": "__notebook__"}
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            code = compile("".join(cell["source"]), f"{notebook.name}[cell {i}]", "exec")
            exec(code, namespace)  # noqa: S102 - running our own notebook is the point
    assert plt.get_fignums(), "the notebook drew no figure"
    plt.close("all")
