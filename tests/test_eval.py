"""`monitor eval` and `monitor model train` as a user runs them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from monitor.analysis.model import load_model
from monitor.cli import main

COMPLAINTS = [
    "@free ça fait une semaine que ma box est bloquée à l'étape 2, c'est une honte",
    "Free en panne depuis 3 jours, toujours pas de réseau",
    "My internet has been down for 3 days and support keeps hanging up on me",
    "@airline lost my bag again, still no answer after a week",
    "je vais résilier, 10 jours sans internet",
    "I'm going to cancel my contract, worst service ever",
]
FINE = [
    "Nouvelle offre : la Freebox Pop passe à 29,99 € par mois dès lundi",
    "Happy birthday to my best friend, what a great day at the beach",
    "Merci pour votre aide rapide, tout fonctionne",
    "Watching the match tonight with friends",
]


def write(path: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("text", "label")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where there is no monitor.yaml: eval then uses the built-in pack for one brand."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def labels(tmp_path: Path) -> Path:
    return write(tmp_path / "labels.csv", [(t, "1") for t in COMPLAINTS] + [(t, "0") for t in FINE])


def test_eval_json_is_exactly_the_documented_object(labels: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "eval", str(labels), "--json")
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"n", "precision", "recall", "f1", "macro_f1", "tp", "fp", "fn", "tn"}
    assert result["n"] == 10 and result["tp"] + result["fn"] == 6 and result["fp"] + result["tn"] == 4
    assert result["macro_f1"] >= 0.8
    assert "model: light model" in err  # says which model ran


def test_eval_by_rule_and_targets(labels: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "eval", str(labels), "--json", "--by-rule", "--brand", "Free")
    by_rule = json.loads(out)["by_rule"]
    assert set(by_rule) == {"churn-threat", "complaint"}
    assert by_rule["churn-threat"]["tp"] == 2  # the two posts threatening to leave
    code, out, _ = run(capsys, "eval", str(labels), "--json", "--target", "churn")
    assert code == 0 and json.loads(out)["tp"] == 2
    code, out, _ = run(capsys, "eval", str(labels), "--target", "complaint")
    assert code == 0 and "macro_f1" in out and "complaint on 10 examples" in out


def test_eval_sentiment_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        ("Service client nul, je suis très déçu", "negative"),
        ("Worst customer service ever", "0"),
        ("Merci beaucoup, super service, je suis ravi !", "positive"),
        ("Thank you so much, great service!", "2"),
    ]
    code, out, _ = run(
        capsys, "eval", str(write(tmp_path / "s.csv", rows)), "--target", "sentiment", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"n", "accuracy", "macro_f1"} and result["n"] == 4 and result["accuracy"] >= 0.75


def test_eval_cross_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [(f"{t} {i}", "1") for i in range(3) for t in COMPLAINTS[:4]]
    rows += [(f"{t} {i}", "0") for i in range(3) for t in FINE]
    code, out, _ = run(capsys, "eval", str(write(tmp_path / "cv.csv", rows)), "--cv", "3", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["n"] == 24 and result["tp"] + result["fn"] == 12


@pytest.mark.parametrize(
    ("rows", "header", "message"),
    [
        ([("texte", "maybe")], ("text", "label"), "line 2: label 'maybe' is not 0 or 1"),
        ([("texte", "1")], ("body", "label"), "expected a CSV header with `text` and `label` columns"),
        ([], ("text", "label"), "no labelled rows"),
    ],
)
def test_eval_bad_files_exit_2_with_the_reason(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: list[tuple[str, str]],
    header: tuple[str, ...],
    message: str,
) -> None:
    code, _, err = run(capsys, "eval", str(write(tmp_path / "bad.csv", rows, header)))
    assert code == 2 and message in err


def test_model_train_is_reproducible_from_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`monitor model train` on a (small) copy of the data layout writes a model that loads and scores."""
    data = tmp_path / "data"
    sentiment = [
        ("déçu nul honte", "negative"),
        ("bof normal", "neutral"),
        ("super ravi merci", "positive"),
    ] * 4
    english = [
        ("bad awful angry", "negative"),
        ("ok normal fine", "neutral"),
        ("great love thanks", "positive"),
    ] * 4
    for folder in ("sentiment-umsab", "complaints-en", "fr-telecom-tweets"):
        (data / folder).mkdir(parents=True)
    write(data / "sentiment-umsab" / "fr_train.csv", sentiment)
    write(data / "sentiment-umsab" / "en_train.csv", english)
    write(
        data / "complaints-en" / "train.csv",
        [(str(i), "my order never came", "1", "x") for i in range(6)]
        + [(str(i), "nice day", "0", "x") for i in range(6)],
        ("id", "text", "label", "domain"),
    )
    write(
        data / "fr-telecom-tweets" / "unlabelled.csv",
        [(f"{i:03d}", "a", "box en panne", "d") for i in range(6)]
        + [(f"{i:03d}", "a", "belle journée", "d") for i in range(6, 12)],
        ("tweet_id", "author", "text", "date"),
    )
    annotations = write(
        tmp_path / "labels.csv",
        [(f"{i:03d}", "1", "1" if i < 3 else "0") for i in range(6)]
        + [(f"{i:03d}", "0", "0") for i in range(6, 12)],
        ("tweet_id", "complaint", "churn"),
    )
    output = tmp_path / "model.npz"
    args = ["model", "train", "--data", str(data), "--labels", str(annotations), "--output", str(output)]
    code, out, _ = run(capsys, *args)
    assert code == 0 and f"wrote {output}" in out and "fr/complaint: 24" in out
    model = load_model(str(output))
    (scores,) = model.analyse(["box en panne depuis hier"], "fr")
    assert scores is not None and scores.complaint is not None and scores.complaint > 0.5
    assert model.metadata["examples"]["en/complaint"] == 12
