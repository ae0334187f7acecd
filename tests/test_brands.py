"""Brand matching: aliases and handles, case/accent-insensitive, word boundaries, exclusions win."""

from __future__ import annotations

import pytest

from monitor.analysis.brands import BrandMatcher
from monitor.config import Brand

BOUYGUES = Brand(
    name="Bouygues Telecom",
    aliases=("Bouygues Télécom", "BouyguesTelecom", "Bouygues"),
    handles=("@bouyguestelecom",),
    exclude=("Bouygues Construction", "Bouygues Immobilier"),
)
ORANGE = Brand(name="Orange", handles=("@orange_france",))
MATCHER = BrandMatcher([BOUYGUES, ORANGE])


@pytest.mark.parametrize(
    ("text", "brand"),
    [
        ("Merci Bouygues Télécom !", "Bouygues Telecom"),
        ("merci bouygues telecom", "Bouygues Telecom"),
        ("MERCI BOUYGUES TÉLÉCOM", "Bouygues Telecom"),
        ("Bouygues-Telecom encore en panne", "Bouygues Telecom"),
        ("#BouyguesTelecom en panne", "Bouygues Telecom"),
        ("@bouyguestelecom pourquoi ?", "Bouygues Telecom"),
        ("Bouygues Construction livre le stade", None),
        ("bouygues construction et bouygues immobilier", None),
        ("Bouygues Construction livre le stade, et mon forfait Bouygues est en panne", "Bouygues Telecom"),
        ("Bouyguesland is a place", None),  # word boundary
        ("my orange juice", "Orange"),  # the alias matches; rules decide if it matters
        ("j'ai quitté Orange pour Bouygues Telecom", "Orange"),  # earliest named brand
        ("rien à voir", None),
        ("@bouyguestelecomfan hello", None),
    ],
)
def test_match(text: str, brand: str | None) -> None:
    assert MATCHER.match(text) == brand


def test_allowed_restricts_brands() -> None:
    assert MATCHER.match("Orange et Bouygues Telecom", allowed=["Bouygues Telecom"]) == "Bouygues Telecom"


def test_brand_account() -> None:
    assert MATCHER.is_brand_account("Bouygues Telecom", "BouyguesTelecom")
    assert MATCHER.is_brand_account("Bouygues Telecom", "@bouyguestelecom")
    assert not MATCHER.is_brand_account("Bouygues Telecom", "orange_france")
    assert not MATCHER.is_brand_account("Orange", None)
