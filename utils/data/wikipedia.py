"""MediaWiki XML dumps (*.xml.bz2, streamed) -> clean article text -> sentences.

The dump is read as a stream with mwxml and never decompressed to disk. Article wikitext is parsed with
mwparserfromhell, which drops templates and comments; on top of that this module removes what Google's
BERT recipe leaves out of Wikipedia ("text passages only, no lists, tables or headers"): headings,
tables, list items, <ref> and other non-prose tags, file/image/category and interlanguage links.
Redirects, pages outside the article namespace and disambiguation pages are skipped.

    python -m utils.data.wikipedia DUMP.xml.bz2 OUTPUT.txt[.gz] [--num_workers N]
writes one sentence per line with a blank line between articles (Google's pre-training input format).
"""
import re
import sys
import xml.etree.ElementTree
import zlib
from dataclasses import dataclass

import mwparserfromhell
import mwxml
from mwparserfromhell.nodes import Comment, Heading, Tag, Template, Wikilink

from utils import interrupts
from utils.cli import argument_parser
from utils.errors import BertError
from utils.progress import progress_bar
from utils.data.sentences import (CorpusError, ReadStats, check_output_file, list_input_files, open_compressed,
                                  parallel_map, split_sentences, write_sentence_file)

DUMP_SUFFIXES = (".bz2", ".xml")  # dump slices are named e.g. "...xml-p10p30302-shortened.bz2"
ARTICLE_NAMESPACE = 0
# Tags whose content is not running prose.
DROP_TAGS = {"ref", "references", "table", "gallery", "math", "chem", "ce", "timeline", "imagemap", "score",
             "syntaxhighlight", "source", "pre", "code", "hiero", "graph", "mapframe", "templatestyles",
             "categorytree"}
LIST_TAGS = {"li", "dt", "dd"}
MEDIA_LINK_PREFIXES = {"file", "image", "media", "category"}
INTERLANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}(-[a-z]+)*$|^simple$")
DISAMBIGUATION_TEMPLATES = {"disambiguation", "disambig", "dab", "disamb", "hndis", "geodis", "numberdis",
                            "letter disambiguation", "school disambiguation", "hospital disambiguation",
                            "mil-unit-dis", "place name disambiguation", "species latin name disambiguation"}
MAGIC_WORD = re.compile(r"__[A-Z]+__")
EMPTY_PARENTHESES = re.compile(r"\s*\([\s,;]*\)")  # left where a pronunciation template was removed
LIST_MARK = "\ue000"  # a private-use character; mwparserfromhell drops NUL
MIN_PARAGRAPH_WORDS = 3


@dataclass
class Page:
    title: str
    namespace: int
    redirect: str
    text: str


@dataclass
class WikiStats(ReadStats):
    pages: int = 0
    redirects: int = 0
    other_namespaces: int = 0
    disambiguation_titles: int = 0


def iter_pages(path, stats):
    """Every page of one dump file with the text of its last revision, streamed."""
    stream, raw = open_compressed(path)
    stats.files += 1
    start, pages_before = stats.bytes_read, stats.pages
    try:
        dump = mwxml.Dump.from_file(stream)
        for page in dump:
            text = None
            for revision in page:
                text = revision.text
            stats.pages += 1
            stats.bytes_read = start + raw.tell()
            yield Page(page.title, page.namespace, page.redirect, text or "")
    except (OSError, EOFError, zlib.error, xml.etree.ElementTree.ParseError) as e:
        raise CorpusError(f"{path}: not a readable MediaWiki XML dump ({e})") from None
    except Exception as e:  # mwxml wraps malformed XML in its own exception types
        if type(e).__module__.startswith(("mwxml", "mwtypes")):
            raise CorpusError(f"{path}: not a readable MediaWiki XML dump ({e})") from None
        raise
    finally:
        stream.close()
        raw.close()
    if stats.pages == pages_before:
        raise CorpusError(f"{path}: the dump holds no pages")


def iter_article_texts(paths, stats):
    """Wikitext of the article pages of the dumps: no redirects, other namespaces or '(disambiguation)'."""
    for path in paths:
        for page in iter_pages(path, stats):
            if page.namespace != ARTICLE_NAMESPACE:
                stats.other_namespaces += 1
            elif page.redirect or page.text.lstrip()[:9].upper() == "#REDIRECT":
                stats.redirects += 1
            elif page.title.endswith("(disambiguation)"):
                stats.disambiguation_titles += 1
            else:
                stats.documents += 1
                yield page.text


def template_name(template):
    return str(template.name).strip().lower().replace("_", " ")


def is_disambiguation(code):
    return any(template_name(t) in DISAMBIGUATION_TEMPLATES for t in code.filter_templates(recursive=False))


def link_prefix(link):
    title = str(link.title).strip().lstrip(":")
    return title.split(":", 1)[0].strip().lower() if ":" in title else None


def is_non_prose(node):
    if isinstance(node, (Heading, Template, Comment)):
        return True
    if isinstance(node, Tag):
        return str(node.tag).strip().lower() in DROP_TAGS
    if isinstance(node, Wikilink):
        prefix = link_prefix(node)
        return prefix is not None and (prefix in MEDIA_LINK_PREFIXES or bool(INTERLANGUAGE_PREFIX.match(prefix)))
    return False


def remove_nodes(code, nodes):
    for node in nodes:
        try:
            code.remove(node)
        except ValueError:  # inside a node that was removed already
            pass


def clean_wikitext(wikitext):
    """Article wikitext -> prose paragraphs ([] for a disambiguation page)."""
    code = mwparserfromhell.parse(wikitext)
    if is_disambiguation(code):
        return []
    remove_nodes(code, [n for n in code.filter(recursive=True) if is_non_prose(n)])
    for node in code.filter_tags(recursive=True):
        if str(node.tag).strip().lower() in LIST_TAGS:
            try:
                code.replace(node, LIST_MARK)
            except ValueError:
                pass
    text = EMPTY_PARENTHESES.sub("", MAGIC_WORD.sub("", code.strip_code(normalize=True, collapse=True)))
    paragraphs = []
    for line in text.split("\n"):
        line = " ".join(line.split())
        if LIST_MARK in line or len(line.split()) < MIN_PARAGRAPH_WORDS:
            continue
        paragraphs.append(line)
    return paragraphs


def wikitext_to_sentences(wikitext):
    """Article wikitext -> its sentences, the preprocessing step run inside the pipeline's workers."""
    sentences = []
    for paragraph in clean_wikitext(wikitext):
        sentences += split_sentences(paragraph)
    return sentences


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("dump", help="a MediaWiki .xml.bz2 dump or a folder of them")
    parser.add_argument("output", help="sentence file to write (.gz to compress)")
    parser.add_argument("--num_workers", type=int, default=1, help="processes that clean the wikitext")
    args = parser.parse_args(argv)
    stats = WikiStats()
    with interrupts.main_guard("wikipedia"):
        try:
            check_output_file(args.output)
            paths = list_input_files(args.dump, DUMP_SUFFIXES)
            articles = parallel_map(wikitext_to_sentences, iter_article_texts(paths, stats), args.num_workers)
            count = write_sentence_file(progress_bar(articles, unit="article", desc="wikipedia"), args.output)
        except (BertError, OSError) as e:
            sys.exit(f"error: {e}")
        print(f"wrote {count} articles to {args.output} from {stats.pages} pages (skipped {stats.redirects} "
              f"redirects, {stats.other_namespaces} non-article pages, {stats.disambiguation_titles} "
              "disambiguation titles)")


if __name__ == "__main__":
    main()
