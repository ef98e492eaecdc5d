"""`contrastive data {synth,convert,tokenizer,inspect,score,filter,curate}`: make, convert, check, score and curate
datasets.

data.synth, data.tokenizer and contrastive.scoring (which import torch) and data.filtering (pyarrow) are imported by
the commands that run them, not to parse.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from contrastive.stopping import Stopped, raising_on_stop
from data.convert import DEFAULT_TEMPLATE, FORMATS, ConvertOptions, convert, imagefolder_records, table_records
from data.convert import describe_stopped as convert_stopped
from data.errors import DataError
from data.inspect import format_report, inspect_shards
from data.plural import count

if TYPE_CHECKING:
    from contrastive.scoring import ScoreJob
    from data.filtering import FilterOptions


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

    filt = commands.add_parser("filter", help="keep the samples above a score threshold (and simple filters)",
                               description="Keep the samples of a pool whose score (`data score`) passes a rule "
                                           "and that pass the simple filters given, repacked into new shards; "
                                           "OUT/summary.json counts what each rule removed (docs/curation.md).")
    add_filter_arguments(filt)
    filt.add_argument("--task", metavar="I/N",
                      help="filter only the I-th (from 0) of N contiguous slices of the pool into OUT.parts; once "
                           "all N have, the same command without --task writes OUT (`submit filter` does both)")
    filt.set_defaults(run=_filter)

    cur = commands.add_parser("curate", help="balance a pool over metadata entries (MetaCLIP)",
                              description="MetaCLIP's curation: match captions against metadata entries, drop the "
                                          "samples that match none, and keep each of the others with probability "
                                          "1 - prod(1 - min(1, T / count(entry))) over its entries, repacked into "
                                          "new shards (docs/curation.md).")
    cur.add_argument("shards", nargs="+", metavar="SHARDS",
                     help="brace/glob patterns or folders, e.g. 'd/shard-{000000..000007}.tar' or d/")
    cur.add_argument("out", metavar="OUT",
                     help="new folder for the shards, summary.json and the plot; with --counts-only the counts file")
    cur.add_argument("--metadata", required=True, metavar="ENTRIES", help="text file of entries, one per line")
    cur.add_argument("--per-entry-cap", type=int, metavar="T",
                     help="T: an entry's samples are kept with probability min(1, T / count)")
    cur.add_argument("--counts-only", action="store_true",
                     help="only count each entry's matches in SHARDS (one part of the pool) into the file OUT")
    cur.add_argument("--counts", action="append", default=[], metavar="PATTERN",
                     help="counts files of --counts-only that together cover SHARDS, instead of counting first "
                          "(repeat, or a glob pattern)")
    cur.add_argument("--lowercase", action="store_true", help="match lower-cased captions against lower-cased entries")
    cur.add_argument("--seed", type=int, default=0, help="seed of the per-sample, per-entry coins")
    _add_repack_arguments(cur)
    cur.set_defaults(run=_curate)

    score = commands.add_parser("score", help="score every sample's image against its captions with a model",
                                description="Embed each sample's image and caption lines with a model (a run dir of "
                                            "ours or an imported one) and write OUT/NAME.parquet per shard NAME.tar: "
                                            "each caption's unscaled similarity and the sample's score, their max "
                                            "(docs/curation.md). Shards with a score file are skipped: rerun a "
                                            "stopped run to finish it.")
    add_score_arguments(score)
    score.set_defaults(run=_score)


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """`data filter`'s arguments, which `submit filter` takes too."""
    parser.add_argument("shards", nargs="+", metavar="SHARDS",
                        help="brace/glob patterns or folders, e.g. 'd/shard-{000000..000007}.tar' or d/")
    parser.add_argument("out", metavar="OUT", help="new folder for the shards and summary.json")
    parser.add_argument("--scores", required=True, metavar="SCORES", help="folder of the pool's score files")
    rule = parser.add_mutually_exclusive_group(required=True)
    rule.add_argument("--keep-fraction", metavar="F",
                      help="the top F of the pool's scored samples: exactly floor(F x N) of N, ties at the "
                           "threshold broken by pool order")
    rule.add_argument("--min-score", type=float, metavar="S", help="the samples scoring at least S")
    parser.add_argument("--min-caption-words", type=int, metavar="N", help="every caption line has at least N words")
    parser.add_argument("--max-caption-words", type=int, metavar="N", help="every caption line has at most N words")
    parser.add_argument("--min-image-size", type=int, metavar="PX",
                        help="the image's shorter side has at least PX pixels (KEY.json's width/height, else the "
                             "image header)")
    parser.add_argument("--language", action="append", default=[], metavar="VALUE",
                        help="keep samples whose KEY.json language field is VALUE (repeat for several)")
    parser.add_argument("--language-field", default="language", metavar="FIELD", help="KEY.json field of --language")
    parser.add_argument("--dedup", action="store_true",
                        help="remove samples whose image bytes (sha256) equal a sample's kept before, in pool order")
    parser.add_argument("--source-field", metavar="FIELD",
                        help="KEY.json field to count kept/total by in the summary (besides the source shard)")
    _add_repack_arguments(parser)


def filter_options(args: argparse.Namespace) -> FilterOptions:
    """The filter the arguments describe, checked."""
    from data.filtering import FilterOptions

    options = FilterOptions(keep_fraction=args.keep_fraction, min_score=args.min_score,
                            min_caption_words=args.min_caption_words, max_caption_words=args.max_caption_words,
                            min_image_size=args.min_image_size, languages=tuple(args.language),
                            language_field=args.language_field, dedup=args.dedup, source_field=args.source_field)
    options.check()
    return options


def _add_repack_arguments(parser: argparse.ArgumentParser) -> None:
    """What the commands that repack a pool into new shards (data.repack) share."""
    parser.add_argument("--max-samples-per-shard", type=int, default=1000, metavar="N")
    parser.add_argument("--workers", type=int, default=1, help="processes reading the source shards")


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


def _filter(args: argparse.Namespace) -> int:
    from data.filtering import filter_pool

    options = filter_options(args)
    task = parse_task(args.task) if args.task is not None else None
    return _repack(args.out, lambda: filter_pool(args.shards, args.scores, args.out, options,
                                                 max_samples_per_shard=args.max_samples_per_shard,
                                                 workers=args.workers, task=task))


def parse_task(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if match is None or not int(match[1]) < int(match[2]):
        raise DataError(f"--task {text!r} must be I/N with 0 <= I < N (the I-th of N slices of the pool, from 0)")
    return int(match[1]), int(match[2])


def _repack(out: str, run: Callable[[], Any]) -> int:
    """A command that writes OUT whole or not at all (data.repack): its summary, or one line if it is stopped."""
    try:
        with raising_on_stop():
            report = run()
    except Stopped as e:
        raise Stopped(e.signum, f"nothing was written to {out} (it appears only complete); run the same command "
                                "again") from None
    print(report.summary())
    return 0


def _curate(args: argparse.Namespace) -> int:
    from data.curation import count_pool, curate_pool

    if args.counts_only:
        if args.counts or args.per_entry_cap is not None:
            raise DataError("--counts-only counts the pool for a later run: it takes neither --counts nor "
                            "--per-entry-cap")
        with raising_on_stop():
            counts = count_pool(args.shards, args.metadata, lowercase=args.lowercase, workers=args.workers)
            counts.save(args.out)
        print(f"counted {counts.matched} of {count(counts.samples, 'sample')} in "
              f"{count(len(counts.shards), 'shard')} matching an entry, into {args.out}")
        return 0
    if args.per_entry_cap is None:
        raise DataError("curate needs --per-entry-cap T (or --counts-only, to count a part of the pool)")
    return _repack(args.out, lambda: curate_pool(args.shards, args.metadata, args.out, args.per_entry_cap,
                                                 counts=args.counts, seed=args.seed, lowercase=args.lowercase,
                                                 max_samples_per_shard=args.max_samples_per_shard,
                                                 workers=args.workers))


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """`data score`'s arguments, which `submit score` takes too."""
    parser.add_argument("shards", nargs="+", metavar="SHARDS",
                        help="brace/glob patterns or folders, e.g. 'd/shard-{000000..000007}.tar' or d/")
    parser.add_argument("--model", required=True, metavar="RUN_DIR",
                        help="run dir (its latest checkpoint; `contrastive import` makes one of a peer's model) or "
                             "a checkpoint file")
    parser.add_argument("--out", required=True, metavar="OUT", help="folder for the score files")
    parser.add_argument("--embeddings", action="store_true",
                        help="also store the image and caption embeddings (float16)")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N", help="images per forward")
    parser.add_argument("--workers", type=int, default=2, help="loader processes decoding and tokenizing")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def score_job(args: argparse.Namespace) -> ScoreJob:
    """The job `data score` and `submit score` arguments describe, checked: --out, the shards, the model."""
    from contrastive.scoring import ScoreJob, check_out_dir, model_checkpoint, shard_list

    if args.batch_size < 1 or args.workers < 0:
        raise DataError(f"--batch-size must be at least 1 and --workers at least 0, got {args.batch_size} and "
                        f"{args.workers}")
    check_out_dir(args.out)
    shards = shard_list(args.shards)
    model_checkpoint(args.model)
    return ScoreJob(shards, args.model, args.out, embeddings=args.embeddings, batch_size=args.batch_size,
                    workers=args.workers, device=args.device)


def _score(args: argparse.Namespace) -> int:
    from contrastive.scoring import score_shards

    job = score_job(args)
    try:
        with raising_on_stop():
            report = score_shards(job)
    except Stopped as e:
        raise Stopped(e.signum, f"the shards finished before the stop have their score files in {args.out}, no "
                                "half-written file is left; rerun the same command to score the rest") from None
    print(report.summary(args.out))
    return 0
