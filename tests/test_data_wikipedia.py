"""Wikipedia extraction on the real 206-page dump slice, checked against an independent XML count."""
import bz2
import os
import re
import xml.etree.ElementTree as ET

import mwparserfromhell
import pytest

from utils.data import wikipedia
from utils.data.sentences import CorpusError
from utils.paths import shared_data_path

DUMP = shared_data_path("wiki", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
MARKUP = re.compile(r"\[\[|\]\]|\{\{|\}\}|\{\||\|\}|<ref|</|/>|<!--|''|==|&nbsp;|&amp;|\bthumb\||"
                    r"\b(File|Image|Category):|__[A-Z]+__")

pytestmark = pytest.mark.skipif(not os.path.isfile(DUMP), reason="wiki dump slice not found (set BERT_SHARED_DATA)")


def independent_counts():
    """Pages, article-namespace pages and redirects of the dump, read with ElementTree."""
    pages = articles = redirects = 0
    with bz2.open(DUMP) as f:
        for _, element in ET.iterparse(f):
            if element.tag.endswith("}page"):
                ns = element.find("{*}ns").text
                pages += 1
                if ns == "0":
                    articles += 1
                    redirects += element.find("{*}redirect") is not None
                element.clear()
    return pages, articles, redirects


@pytest.fixture(scope="module")
def articles():
    stats = wikipedia.WikiStats()
    texts = list(wikipedia.iter_article_texts([DUMP], stats))
    return stats, texts


def test_page_counts_match_the_xml(articles):
    stats, texts = articles
    pages, in_main_namespace, redirects = independent_counts()
    assert (pages, in_main_namespace, redirects) == (206, 205, 99)
    assert stats.pages == pages
    assert stats.other_namespaces == pages - in_main_namespace
    assert stats.redirects == redirects
    assert stats.documents == len(texts) == in_main_namespace - redirects - stats.disambiguation_titles
    assert stats.disambiguation_titles > 0


def test_articles_come_out_as_clean_prose(articles):
    _, texts = articles
    small = sorted((t for t in texts if 2_000 < len(t) < 25_000), key=len)[:20]
    assert len(small) == 20
    disambiguation = produced = 0
    for text in small:
        paragraphs = wikipedia.clean_wikitext(text)
        for paragraph in paragraphs:
            assert not MARKUP.search(paragraph), paragraph
            assert "\n" not in paragraph and paragraph == paragraph.strip()
        if wikipedia.is_disambiguation(mwparserfromhell.parse(text)):
            disambiguation += 1
            assert paragraphs == []
        produced += bool(paragraphs)
        sentences = wikipedia.wikitext_to_sentences(text)
        assert len(sentences) >= len(paragraphs)
    assert 0 < disambiguation < 5
    assert produced >= 15  # the rest are lists only (e.g. a list of people), which BERT's recipe drops


def test_cleaning_drops_non_prose():
    wikitext = """{{Infobox thing|name=Foo}}
'''Foo''' is a [[bar|thing]] with refs.<ref>Cite this, please.</ref> It has more words here.<!-- hidden -->

== History ==
{| class="wikitable"
| cell one || cell two
|}
* a list item with words
# a numbered item with words
[[File:X.jpg|thumb|A caption that is long]]
Second paragraph has [[Link]] text and {{cite web|url=x}} templates (   ) here.
[[Category:Things]]
[[de:Foo]]
__NOTOC__"""
    assert wikipedia.clean_wikitext(wikitext) == [
        "Foo is a thing with refs. It has more words here.",
        "Second paragraph has Link text and templates here.",
    ]
    assert wikipedia.wikitext_to_sentences(wikitext)[:2] == ["Foo is a thing with refs.", "It has more words here."]


def test_disambiguation_pages_are_dropped():
    assert wikipedia.clean_wikitext("'''Mercury''' may refer to:\n* planet words here\n{{disambiguation}}") == []
    assert wikipedia.clean_wikitext("'''Mercury''' may refer to many things today.\n{{Dab}}") == []


def test_corrupt_and_truncated_dumps_are_named(tmp_path):
    garbage = tmp_path / "garbage.xml.bz2"
    garbage.write_bytes(b"BZh91AY&SY" + os.urandom(2000))
    truncated = tmp_path / "truncated.xml.bz2"
    with open(DUMP, "rb") as f:
        truncated.write_bytes(f.read(300_000))
    for path in (garbage, truncated):
        with pytest.raises(CorpusError, match=re.escape(str(path))):
            list(wikipedia.iter_article_texts([str(path)], wikipedia.WikiStats()))
