"""The tutorials (jupytext percent notebooks in ``tutorials/``) run top to
bottom in fast mode, each in its own process and a scratch folder."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted(
    (Path(__file__).resolve().parents[1] / "tutorials").glob("[0-9][0-9]_*.py")
)
# A call that draws: a vn.plot function, a report's .plot(...), or a
# matplotlib Figure built by hand.
FIGURE_CALL = re.compile(r"\bvn\.plot\.\w+\(|\.plot\(|\bFigure\(")


def _ids(path: Path) -> str:
    return path.stem


def test_all_seven_tutorials_are_found():
    assert [p.stem[:2] for p in TUTORIALS] == [f"0{i}" for i in range(1, 8)]


@pytest.mark.parametrize("path", TUTORIALS, ids=_ids)
def test_tutorial_is_a_notebook_with_a_figure(path):
    text = path.read_text()
    assert re.search(r"^# %% \[markdown\]$", text, re.MULTILINE), "no markdown cell"
    assert re.search(r"^# %%$", text, re.MULTILINE), "no code cell"
    assert FIGURE_CALL.search(text), "no figure-producing call"
    assert 'os.environ.get("VERINET_TUTORIAL_FAST") == "1"' in text
    assert "plt.show(" not in text  # it would block a script


@pytest.mark.parametrize("path", TUTORIALS, ids=_ids)
def test_tutorial_runs_in_fast_mode(path, tmp_path):
    env = {
        **os.environ,
        "VERINET_TUTORIAL_FAST": "1",
        "KERAS_BACKEND": "torch",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,  # files the tutorial writes stay out of the repository
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"{path.name} failed (exit {result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
