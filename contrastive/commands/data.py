"""`contrastive data {synth,convert,tokenizer,inspect}`: make, convert and check datasets.

data.synth and data.tokenizer (which import torch) are imported by the commands that run them, not to parse.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from contrastive.stopping import Stopped, raising_on_stop
from data.convert import DEFAULT_TEMPLATE, FORMATS, ConvertOptions, convert, imagefolder_records, table_records
from data.convert import describe_stopped as convert_stopped
from data.errors import DataError
from data.inspect import format_report, inspect_shards
from data.plural import count


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="make, convert, inspect datasets; train a tokenizer",
                                   description="Make, convert and inspect WebDataset shards; train a tokenizer.")
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    synth = commands.add_parser("synth", help="write the procedural demo dataset (train shards, eval sets, tokenizer)",
                                description="Write the procedural demo dataset: rendered shape scenes with "
                                            "attribute and relation captions. Deterministic by seed.")
    synth.add_argument("out", metavar="OUT", help="output directory (an earlier synth output there is replaced)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--train-samples", type=int, default=8000)
    synth.add_argument("--samples-per-shard", type=int, default=1000)
    synth.add_argument("--image-size", type=int, default=64, metavar="PX")
    synth.add_argument("--images-per-class", type=int, default=12, help="zero-shot evaluation images per class")
    synth.add_argument("--retrieval-images", type=int, default=500, help="images per retrieval evaluation set")
    synth.set_defaults(run=_synth)

    conv = commands.add_parser("convert", help="convert a CSV/TSV/JSONL table or an ImageFolder tree into shards",
                               description="Convert image-caption pairs into shards (KEY.jpg|png|webp, KEY.txt, "
                                           "KEY.json). SRC is a table (.csv, .tsv, .jsonl; brace/glob patterns for "
                                           "several) or an ImageFolder directory (captions from templates).")
    conv.add_argument("src", metavar="SRC")
    conv.add_argument("out", metavar="OUT", help="directory for shard-NNNNNN.tar and skipped.jsonl")
    conv.add_argument("--captions-template", action="append", metavar="TEMPLATE",
                      help=f"ImageFolder caption template, '{{}}' = class name; repeat for several caption lines "
                           f"(default {DEFAULT_TEMPLATE!r})")
    conv.add_argument("--image-column", default="image", help="table column / JSON field of the image path")
    conv.add_argument("--caption-column", default="caption", help="table column / JSON field of the caption")
    conv.add_argument("--max-samples-per-shard", type=int, default=1000, metavar="N")
    conv.add_argument("--max-shard-bytes", type=int, default=None, metavar="B")
    conv.add_argument("--resize-longer", type=int, default=None, metavar="PX",
                      help="shrink images whose longer side exceeds PX (never enlarges)")
    conv.add_argument("--format", choices=sorted(FORMATS), default=None,
                      help="re-encode images to this format (default: keep jpg/png/webp, others become jpg)")
    conv.add_argument("--workers", type=int, default=1, help="processes decoding and encoding images")
    conv.set_defaults(run=_convert)

    tok = commands.add_parser("tokenizer", help="train a byte-level BPE tokenizer on captions",
                              description="Train a byte-level BPE on the captions of shards (*.tar) or text files "
                                          "(one caption per line) and save it as a tokenizer.json.")
    tok.add_argument("sources", nargs="+", metavar="SOURCE",
                     help="brace/glob patterns of shards or text files, or folders of shards")
    tok.add_argument("out", metavar="OUT", help="tokenizer.json to write")
    tok.add_argument("--vocab-size", type=int, default=8192)
    tok.set_defaults(run=_tokenizer)

    insp = commands.add_parser("inspect", help="count samples, check images and captions in shards",
                               description="Sample and shard counts, member extensions, image sizes, caption "
                                           "lengths and bad samples by reason.")
    insp.add_argument("shards", nargs="+", metavar="SHARDS",
                      help="brace/glob patterns or folders, e.g. 'd/shard-{000000..000007}.tar' or d/")
    insp.set_defaults(run=_inspect)


def _synth(args: argparse.Namespace) -> int:
    from data.synth import describe_stopped as synth_stopped
    from data.synth import synthesize

    try:
        with raising_on_stop():
            info = synthesize(args.out, seed=args.seed, train_samples=args.train_samples,
                              samples_per_shard=args.samples_per_shard, image_size=args.image_size,
                              images_per_class=args.images_per_class, retrieval_images=args.retrieval_images)
    except Stopped as e:
        raise Stopped(e.signum, synth_stopped(args.out)) from None
    evals = ", ".join(f"{name} {item['images']}" for name, item in info["eval"].items())
    print(f"wrote {args.out}: {count(info['train']['samples'], 'training sample')} in "
          f"{count(info['train']['shards'], 'shard')} ({args.out}/{info['train']['pattern']}); eval images: {evals}; "
          f"tokenizer {args.out}/tokenizer.json")
    return 0


def _convert(args: argparse.Namespace) -> int:
    if Path(args.src).is_dir():
        records = functools.partial(imagefolder_records, args.src, args.captions_template or [DEFAULT_TEMPLATE])
    elif args.captions_template:
        raise DataError(f"--captions-template applies to ImageFolder sources only; {args.src} is not a directory")
    else:
        records = functools.partial(table_records, [args.src], args.image_column, args.caption_column)
    try:
        with raising_on_stop():
            # The progress bar's ETA, on a terminal: a pass over the listing or the table, cheap beside decoding
            # every image.
            total = sum(1 for _ in records()) if sys.stderr.isatty() else None
            report = convert(records(), args.out, ConvertOptions(args.resize_longer, args.format),
                             max_samples_per_shard=args.max_samples_per_shard,
                             max_shard_bytes=args.max_shard_bytes, workers=args.workers, total=total)
    except Stopped as e:
        raise Stopped(e.signum, convert_stopped(args.out)) from None
    print(report.summary())
    return 0


def _tokenizer(args: argparse.Namespace) -> int:
    from data.tokenizer import Tokenizer, captions_from_files, train_bpe

    path = train_bpe(captions_from_files(args.sources), args.vocab_size, args.out)
    print(f"wrote {path}: {Tokenizer.from_file(path, context_length=2).vocab_size} tokens")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    report = inspect_shards(args.shards)
    print(format_report(report))
    return 0
