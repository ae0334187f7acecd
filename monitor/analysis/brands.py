"""Which configured brand a post is about.

Aliases and handles match case- and accent-insensitively on word boundaries. Exclusions win over
the aliases they overlap ("Bouygues Construction" is not "Bouygues Telecom"), but a post that
also names the brand elsewhere still matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from monitor.analysis.text import fold
from monitor.config import Brand


def _term_pattern(terms: Iterable[str]) -> re.Pattern[str] | None:
    parts = {r"[\s\-_]+".join(map(re.escape, fold(t).split())) for t in terms if t.strip()}
    if not parts:
        return None
    ordered = sorted(parts, key=len, reverse=True)
    return re.compile(r"(?<![\w@#])[@#]?(?:" + "|".join(ordered) + r")(?!\w)")


@dataclass(frozen=True, slots=True)
class _CompiledBrand:
    name: str
    terms: re.Pattern[str] | None
    exclusions: re.Pattern[str] | None
    handles: frozenset[str]


class BrandMatcher:
    def __init__(self, brands: Iterable[Brand]) -> None:
        self._brands = [
            _CompiledBrand(
                name=b.name,
                terms=_term_pattern([b.name, *b.aliases, *(h.lstrip("@") for h in b.handles)]),
                exclusions=_term_pattern(b.exclude),
                handles=frozenset(fold(h.lstrip("@")) for h in b.handles),
            )
            for b in brands
        ]

    def match(self, text: str, allowed: Iterable[str] = ()) -> str | None:
        """The brand named earliest in `text` (restricted to `allowed` when given), or None."""
        folded = fold(text)
        allowed_set = set(allowed)
        best: tuple[int, str] | None = None
        for brand in self._brands:
            if (allowed_set and brand.name not in allowed_set) or brand.terms is None:
                continue
            excluded = (
                [m.span() for m in brand.exclusions.finditer(folded)] if brand.exclusions is not None else []
            )
            for hit in brand.terms.finditer(folded):
                start, end = hit.span()
                if any((s <= start and end <= e) or (s < end and start < e) for s, e in excluded):
                    continue
                if best is None or start < best[0]:
                    best = (start, brand.name)
                break
        return best[1] if best else None

    def brand_of_account(self, handle: str | None, allowed: Iterable[str] = ()) -> str | None:
        """The brand whose own account posted this (its replies belong to the conversation)."""
        if not handle:
            return None
        target = fold(handle.lstrip("@"))
        allowed_set = set(allowed)
        for brand in self._brands:
            if target in brand.handles and (not allowed_set or brand.name in allowed_set):
                return brand.name
        return None

    def is_brand_account(self, brand: str, handle: str | None) -> bool:
        """True when `handle` is one of the brand's own accounts (its posts are not complaints)."""
        if not handle:
            return False
        target = fold(handle.lstrip("@"))
        return any(b.name == brand and target in b.handles for b in self._brands)
