"""The evaluation report's example grid names images by their position, never by file name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pneumoscreen.model import report
from pneumoscreen.model.dataset import Sample
from pneumoscreen.model.evaluate import Evaluation

PHI_FILE = "DOE_JANE_MRN-998877.png"


def test_example_captions_carry_positions_not_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: list[str] = []
    real_save = report._save

    def keep_texts(fig: Any, path: Path) -> str:  # every text drawn on the figure
        from matplotlib.text import Text

        texts.extend(t.get_text() for t in fig.findobj(Text))
        return real_save(fig, path)

    monkeypatch.setattr(report, "_save", keep_texts)
    rng = np.random.default_rng(0)
    n = 8
    y = np.array([0, 1] * (n // 2))
    samples = [Sample(tmp_path / f"{i}_{PHI_FILE}", f"{i}_{PHI_FILE}", int(y[i]))
               for i in range(n)]
    ev = Evaluation(dataset=None, y=y, scores=rng.random(n), x=rng.random((n, 16, 16, 1)),
                    samples=samples, metrics={"threshold": 0.5})  # type: ignore[arg-type]
    report.plot_examples(ev, tmp_path / "examples.png", per_group=2)
    captions = [t for t in texts if t.startswith("image ")]
    assert captions and all(t.split("\n")[0].split()[1].isdigit() for t in captions)
    assert not any("DOE" in t or "998877" in t or ".png" in t for t in texts)
