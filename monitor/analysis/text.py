"""Text helpers shared by sources and matchers: HTML to text, and accent/case folding."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from html.parser import HTMLParser

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "td",
        "th",
        "tr",
        "ul",
    ]
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
_SKIP_TAGS = frozenset({"script", "style", "template", "noscript", "head"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def clean_whitespace(text: str) -> str:
    """Collapse runs of blanks inside lines and drop empty lines, keeping paragraph breaks."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment: tags, scripts and styles dropped, entities decoded."""
    if "<" not in html and "&" not in html:
        return clean_whitespace(html)
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return clean_whitespace("".join(parser.parts))


def fold(text: str) -> str:
    """Lower-case, strip accents and unify apostrophes, so "Télécom" and "telecom" compare equal.

    Length-preserving for the common Latin alphabets, so offsets found in folded text point
    at the same characters in the original.
    """
    folded = text.casefold()
    if folded.isascii():
        return folded
    # Folding works character by character: only the non-ASCII runs ("é", "’", an emoji) need
    # it, and the same few runs recur in every French post.
    return _NON_ASCII.sub(_fold_run, folded)


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def _fold_run(match: re.Match[str]) -> str:
    return _folded_run(match.group())


@lru_cache(maxsize=4096)
def _folded_run(run: str) -> str:
    decomposed = unicodedata.normalize("NFKD", run.translate(_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _fold_table() -> dict[int, str]:
    """Accented Latin letters to their base letter, precomputed: `str.translate` is fast."""
    table: dict[int, str] = {ord(k): v for k, v in (("\u2019", "'"), ("\u2018", "'"), ("\u02bc", "'"))}
    for code in range(0xC0, 0x250):
        char = chr(code)
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        if base != char and len(base) == 1:
            table[code] = base.casefold()
    return table


_FOLD = _fold_table()


_ESCAPED = re.compile(r"\\u([0-9a-fA-F]{4})")
_URL = re.compile(r"https?://\S+|\bwww\.\S+")
_HANDLE = re.compile(r"(?<!\w)@\w{1,30}")
MODEL_TEXT_LIMIT = 2000


def model_text(text: str, limit: int = MODEL_TEXT_LIMIT) -> str:
    """The text the models read: URLs and @handles replaced by placeholders, escapes decoded.

    Placeholders keep the signal ("addressed to someone", "links somewhere") without the
    vocabulary of every handle and URL; long posts are cut, since models score the opening.
    """
    text = text[: limit * 2]
    if "\\u" in text:
        text = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)
    if "http" in text or "www." in text:  # substring tests are far cheaper than a regex pass
        text = _URL.sub(" URL ", text)
    if "@" in text:
        text = _HANDLE.sub(" @USER ", text)
    return " ".join(text.split())[:limit]
