"""The evaluation report's example grid names each image by its file name in the evaluated folder
(issue 21, item 13: the user's own data, in a report that is private to its user)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pneumoscreen.model import report
from pneumoscreen.model.dataset import Sample
from pneumoscreen.model.evaluate import Evaluation

PHI_FILE = "DOE_JANE_MRN-998877_$\\frac{a$.png"  # "$...": mathtext if not kept as text


def test_example_captions_carry_the_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts: list[str] = []
    real_save = report._save

    def keep_texts(fig: Any, path: Path, **kwargs: Any) -> str:  # every text on the figure
        from matplotlib.text import Text

        texts.extend(t.get_text() for t in fig.findobj(Text))
        return real_save(fig, path, **kwargs)

    monkeypatch.setattr(report, "_save", keep_texts)
    rng = np.random.default_rng(0)
    n = 8
    y = np.array([0, 1] * (n // 2))
    samples = [Sample(tmp_path / f"{i}_{PHI_FILE}", f"{i}_{PHI_FILE}", int(y[i]))
               for i in range(n)]
    ev = Evaluation(dataset=None, y=y, scores=rng.random(n), x=rng.random((n, 16, 16, 1)),
                    samples=samples, metrics={"threshold": 0.5})  # type: ignore[arg-type]
    report.plot_examples(ev, tmp_path / "examples.png", per_group=2)
    captions = [t for t in texts if PHI_FILE in t]
    assert captions and all(t.split()[0].split("_", 1)[1] == PHI_FILE for t in captions)
    assert not any(t.startswith("image ") for t in texts)  # no bare positions when names exist
