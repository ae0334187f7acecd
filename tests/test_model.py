"""The shipped model runs without scikit-learn and scores exactly as the scikit-learn objects it was compiled from."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from monitor.analysis.model import DetectionModel, char_wb_ngrams, load_model, word_ngrams
from monitor.analysis.text import model_text
from monitor.analysis.training import (
    NBLogisticEnsemble,
    _features,
    compile_language,
    new_vectorizer,
    sentiment_classifier,
)
from monitor.errors import MonitorError


def labelled(limit: int) -> tuple[list[str], np.ndarray]:
    with (SHARED / "data" / "complaints-en" / "train.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])


def test_compiled_model_gives_the_scikit_learn_probabilities() -> None:
    texts, labels = labelled(900)
    prepared = [model_text(t) for t in texts[:600]]
    vectorizer = new_vectorizer().fit(prepared)
    features = _features(vectorizer, prepared, "en")
    sentiment = sentiment_classifier().fit(features, labels[:600] + (np.arange(600) % 2))  # 3 classes
    complaint = NBLogisticEnsemble().fit(features, labels[:600])
    compiled = compile_language("en", vectorizer, sentiment, complaint)
    held = [*texts[600:], "", "a", "Ça ne marche pas !!! 😡 @Free_1337 https://x.co/abc", "x" * 3000]
    expected = _features(vectorizer, [model_text(t) for t in held], "en")
    got = compiled.features(held)
    assert got.shape == expected.shape and got.nnz == expected.nnz
    assert abs(got - expected).max() < 1e-5
    assert np.allclose(compiled.sentiment.predict_proba(got), sentiment.predict_proba(expected), atol=1e-5)
    assert compiled.complaint is not None
    assert np.allclose(compiled.complaint.predict_proba(got), complaint.predict_proba(expected), atol=1e-5)


@pytest.mark.parametrize(
    "text", ["", "a", "ab", "  Forfait  résilié\tdemain !!", "l'opérateur n'a rien fait", "x" * 50]
)
def test_n_grams_match_scikit_learn(text: str) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=(1, 2)).build_analyzer()
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).build_analyzer()
    assert word_ngrams(text, 1, 2) == words(text)
    assert char_wb_ngrams(text, 2, 4) == chars(text)


def test_the_product_never_imports_scikit_learn() -> None:
    code = (
        "import sys; import monitor.daemon, monitor.collector; from monitor.analysis.enrich import Analyzer;"
        "from monitor.mention import Mention;"
        "Analyzer(('fr', 'en'))([Mention(source='s', external_id='1', text='Free en panne, je résilie')]);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'joblib')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_a_model_file_is_data_never_code(tmp_path: Path) -> None:
    model = load_model()
    assert isinstance(model, DetectionModel) and {"en", "fr"} <= set(model.languages)
    copy = tmp_path / "model.npz"
    model.save(copy)
    (again,) = load_model(str(copy)).analyse(["my order never came, worst service"], "en")
    (first,) = model.analyse(["my order never came, worst service"], "en")
    assert again == first
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, header=np.array([object()], dtype=object))  # a pickle inside: refused, not loaded
    with pytest.raises(MonitorError, match="is not a detection model"):
        load_model(str(pickled))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MonitorError, match="rebuild it with `monitor model train`"):
        load_model(str(garbage))
