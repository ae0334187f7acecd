"""News alert feeds (Google Alerts Atom, Talkwalker Alerts RSS) through the RSS source.

The fixtures under tests/fixtures/alerts/ follow the services' feeds: Google Alerts' Atom with
`tag:google.com,2013:googlealerts/feed:<n>` ids, HTML titles and contents (`<b>` around the
matched words, `&#39;` escaped twice) and every link a `https://www.google.com/url?rct=j&sa=t&
url=<article>&ct=ga&cd=…&usg=…` redirect; Talkwalker's RSS with CDATA HTML titles, opaque guids
and links through a talkwalker.com redirect carrying the article in `url=`. They are served by
the local feed server, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Settings
from monitor.feedserver import FeedServer
from monitor.sources.rss import unwrap_redirect
from monitor.storage import queries
from monitor.storage.db import Database

from feeds import collect_once

ALERTS = Path(__file__).parent / "fixtures" / "alerts"
GOOGLE = (ALERTS / "google-alerts-bouygues-telecom.atom.xml").read_text(encoding="utf-8")
TALKWALKER = (ALERTS / "talkwalker-bouygues-telecom.rss.xml").read_text(encoding="utf-8")

LE_MONDE = (
    "https://www.lemonde.fr/economie/article/2026/11/20/panne-geante-chez-bouygues-telecom_6312345_3234.html"
)
LES_ECHOS = (
    "https://www.lesechos.fr/tech-medias/hightech/bouygues-telecom-augmente-le-prix-de-ses-box-2095432"
    "?xtor=RSS-2059&utm_medium=feed"
)
FRANCE_BLEU = "https://www.francebleu.fr/infos/societe/bouygues-telecom-les-abonnes-de-la-loire-toujours-sans-internet-1732100000"
FORUM = "https://forum.lesnumeriques.com/t/resilier-bbox-bouygues-telecom-sans-frais/188213"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (
            "https://www.google.com/url?rct=j&sa=t&url=https://www.lemonde.fr/a.html&ct=ga&cd=CAIy&usg=AOvV",
            "https://www.lemonde.fr/a.html",
        ),
        (
            "https://www.google.fr/url?q=https://example.org/x%3Fa%3D1%26b%3D2&sa=D",
            "https://example.org/x?a=1&b=2",
        ),
        ("https://google.co.uk/url?url=http://example.org/", "http://example.org/"),
        (
            "https://alerts.talkwalker.com/alerts/redirect?u=https%3A%2F%2Fexample.org%2Fp&h=1",
            "https://example.org/p",
        ),
        (  # a Google redirect to a Talkwalker one: both unwrapped
            "https://www.google.com/url?url=https://www.talkwalker.com/r%3Furl%3Dhttps%253A%252F%252Fexample.org%252Fz",
            "https://example.org/z",
        ),
        # Kept as they are: not an http(s) target, not a redirect, not a known redirect host.
        (
            "https://www.google.com/url?url=javascript:alert(1)",
            "https://www.google.com/url?url=javascript:alert(1)",
        ),
        ("https://www.google.com/url?url=/relative/path", "https://www.google.com/url?url=/relative/path"),
        (
            "https://www.google.com/search?q=https://example.org/",
            "https://www.google.com/search?q=https://example.org/",
        ),
        (
            "https://google.evil.example/url?url=https://phish.example/",
            "https://google.evil.example/url?url=https://phish.example/",
        ),
        (
            "https://blog.example/share?url=https://other.example/",
            "https://blog.example/share?url=https://other.example/",
        ),
        ("https://www.lemonde.fr/a.html", "https://www.lemonde.fr/a.html"),
        ("http://[::1/broken", "http://[::1/broken"),
    ],
)
def test_unwrap_redirect(link: str, expected: str) -> None:
    assert unwrap_redirect(link) == expected


def alert_settings(make_settings: Callable[..., Settings], *urls: str) -> Settings:
    return make_settings(sources=[{"type": "rss", "name": "alerts", "urls": list(urls)}])


def stored(db: Database) -> dict[str, dict[str, Any]]:
    with db.session() as session:
        return {m["external_id"]: m for m in queries.list_mentions(session)}


def retracked(feed: str, generation: int) -> str:
    """The same feed as the service serves it later: new tracking values in every redirect link."""
    feed = re.sub(r"(&amp;(?:cd|usg)=)[A-Za-z0-9_-]+", rf"\g<1>poll{generation}", feed)
    return re.sub(r"(&amp;(?:ts|h)=)[A-Za-z0-9]+", rf"\g<1>{generation}", feed)


def test_alert_feeds_store_the_article_url_a_clean_title_and_the_brand(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    google = feed_server.add("/alerts/feeds/0770/9780", GOOGLE)
    talkwalker = feed_server.add("/alerts/rss/OPBC", TALKWALKER, content_type="application/rss+xml")
    report = collect_once(alert_settings(make_settings, google, talkwalker), db)

    assert report.errors == []
    found = stored(db)
    assert set(found) == {
        "tag:google.com,2013:googlealerts/feed:12501224780620368192",
        "tag:google.com,2013:googlealerts/feed:9049310398211864269",
        "tw-alert-OPBCI5UQ3FZZ-5b1f0c7e2a9d4e61",
        "tw-alert-OPBCI5UQ3FZZ-8c3d2b1a0f9e8d77",
    }
    assert report.totals.unmatched == 1  # Bouygues Construction's stadium: excluded by the brand
    outage = found["tag:google.com,2013:googlealerts/feed:12501224780620368192"]
    assert outage["url"] == LE_MONDE
    assert outage["title"] == "Panne géante chez Bouygues Telecom : des milliers de clients privés d'internet"
    assert outage["text"] == (
        "Depuis 6 heures ce matin, les abonnés fixes de Bouygues Telecom ne peuvent plus se connecter. "
        "L'opérateur évoque un incident ..."
    )
    assert outage["author_id"] == "www.lemonde.fr/"  # the publisher, not google.com
    prices = found["tag:google.com,2013:googlealerts/feed:9049310398211864269"]
    assert prices["url"] == LES_ECHOS  # the article's own query string decoded, Google's dropped
    assert prices["title"] == 'Bouygues Telecom augmente le prix de ses box "Bbox" de 3 euros'
    loire = found["tw-alert-OPBCI5UQ3FZZ-5b1f0c7e2a9d4e61"]
    assert loire["url"] == FRANCE_BLEU
    assert loire["title"] == "Bouygues Telecom : les abonnés de la Loire toujours sans internet"
    assert loire["text"].startswith("Les clients de Bouygues Telecom dans la Loire n'ont toujours pas")
    assert (loire["author"], loire["author_id"]) == ("France Bleu", "www.francebleu.fr/France Bleu")
    forum = found["tw-alert-OPBCI5UQ3FZZ-8c3d2b1a0f9e8d77"]
    assert forum["url"] == FORUM  # a direct link stays as it is
    assert forum["title"] == "Forum : résilier sa Bbox Bouygues Telecom sans frais ?"
    for mention in found.values():
        assert mention["brand"] == "Bouygues Telecom"
        assert "<" not in mention["title"] + mention["text"] and "&" not in mention["title"]
        assert "google.com" not in (mention["url"] or "") and "talkwalker" not in (mention["url"] or "")


def test_an_alert_is_stored_once_when_its_tracking_parameters_change(
    feed_server: FeedServer, db: Database, make_settings: Callable[..., Settings]
) -> None:
    settings = alert_settings(
        make_settings,
        feed_server.add("/google", GOOGLE),
        feed_server.add("/talkwalker", TALKWALKER, content_type="application/rss+xml"),
    )
    first = collect_once(settings, db)
    for generation in (1, 2):
        feed_server.add("/google", retracked(GOOGLE, generation))
        feed_server.add("/talkwalker", retracked(TALKWALKER, generation), content_type="application/rss+xml")
        again = collect_once(settings, db)
        assert again.errors == [] and not any(line.not_modified for line in again.streams)
        assert (again.totals.received, again.totals.stored, again.totals.duplicates) == (5, 0, 4)

    assert first.totals.stored == 4 and len(stored(db)) == 4
    assert [hit.status for hit in feed_server.hits_for("/google")] == [200, 200, 200]


def _guid_is_the_link(feed: str) -> str:
    """Each item's guid a permalink: the same tracking link as its <link>."""
    links = iter(re.findall(r"<link>([^<]*)</link>", feed)[1:])  # the first is the channel's
    return re.sub(r"<guid[^>]*>[^<]*</guid>", lambda _: f"<guid>{next(links)}</guid>", feed)


@pytest.mark.parametrize(
    "variant",
    [lambda feed: re.sub(r"<guid[^>]*>[^<]*</guid>", "", feed), _guid_is_the_link],
    ids=["no-guid", "guid-is-the-tracking-link"],
)
def test_without_a_stable_entry_id_the_unwrapped_article_url_is_the_identity(
    feed_server: FeedServer,
    db: Database,
    make_settings: Callable[..., Settings],
    variant: Callable[[str], str],
) -> None:
    """No guid, or a guid that is the tracking link: the article's URL identifies the item."""
    feed = variant(TALKWALKER)
    settings = alert_settings(make_settings, feed_server.add("/tw", feed, content_type="application/rss+xml"))
    collect_once(settings, db)
    feed_server.add("/tw", retracked(feed, 1), content_type="application/rss+xml")
    again = collect_once(settings, db)

    assert set(stored(db)) == {FRANCE_BLEU, FORUM}
    assert again.totals.stored == 0 and again.totals.duplicates == 2
