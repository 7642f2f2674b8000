"""One step from raw input to pre-training records: dump or text -> sentences -> WordPiece -> OFRecord parts.

INPUT may be a MediaWiki dump (.xml.bz2), a text file (.txt or .txt.gz, one paragraph or sentence per
line, a blank line between documents) or a folder holding any of them. Wikitext cleaning and sentence
splitting run inside create_pretraining_data's workers, so the whole chain streams and uses every core.

    python -m utils.data.prepare INPUT OUT_DIR [--vocab_file VOCAB] [--max_seq_length 128]
        [--max_predictions_per_seq 20] [--dupe_factor 10] [--num_parts 8] [--val_fraction 0.01] ...

writes OUT_DIR/part-*, OUT_DIR/val/part-* and OUT_DIR/summary.json (see create_pretraining_data).
"""
import os
import sys

from utils import interrupts
from utils.cli import add_bool, argument_parser
from utils.data import create_pretraining_data as cpd
from utils.data.sentences import TEXT_SUFFIXES, iter_text_documents, list_input_files, report_skipped, split_document
from utils.data.wikipedia import DUMP_SUFFIXES, WikiStats, iter_article_texts, wikitext_to_sentences
from utils.paths import shared_data_path

DEFAULT_VOCAB = shared_data_path("vocab", "bert-base-uncased-vocab.txt")


def is_dump(path):
    return path.endswith(DUMP_SUFFIXES)


def to_sentences(document):
    """Raw document -> sentences: wikitext arrives as one string, text as a list of lines."""
    return wikitext_to_sentences(document) if isinstance(document, str) else split_document(document)


def clean_wikitext_only(document):
    """For text already one sentence per line: only wikitext needs work."""
    return wikitext_to_sentences(document) if isinstance(document, str) else document


def iter_raw_documents(paths, stats, max_skipped_fraction):
    """Articles of the dumps and documents of the text files, in path order."""
    for path in paths:
        if is_dump(path):
            yield from iter_article_texts([path], stats)
        else:
            yield from iter_text_documents([path], stats, max_skipped_fraction)


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("input", help=".xml.bz2 dump, .txt, .txt.gz, or a folder of them")
    parser.add_argument("output_dir")
    add_bool(parser, "--split_sentences", default=True,
             help="split text lines into sentences (turn off for input already one sentence per line)")
    cpd.add_options_arguments(parser, vocab_default=DEFAULT_VOCAB)
    parser.set_defaults(val_fraction=0.01)
    args = parser.parse_args(argv)
    stats = WikiStats()
    with interrupts.main_guard("prepare"):
        try:
            paths = list_input_files(args.input, TEXT_SUFFIXES + DUMP_SUFFIXES)
            documents = cpd.slice_documents(iter_raw_documents(paths, stats, args.max_skipped_fraction),
                                            args.skip_documents, args.max_documents)
            corpus = cpd.Corpus(documents, name=args.input, read_stats=stats,
                                preprocess=to_sentences if args.split_sentences else clean_wikitext_only,
                                total_bytes=sum(os.path.getsize(p) for p in paths),
                                summary_fields={"input": args.input, "input_files": len(paths)})
            summary = cpd.write_pretraining_data(corpus, cpd.pipeline_options_from_args(args))
        except cpd.PIPELINE_ERRORS as e:
            sys.exit(f"error: {e}")
        report_skipped(stats)
        cpd.print_summary(summary, args.output_dir)


if __name__ == "__main__":
    main()
