"""``gen-samples``: argument parsing and error messages over :mod:`generator.api` (no logic here).

    gen-samples --rows 3040 --seed 0 --out out/catalogue [--num-proc 2] [--push [REPO_ID] [--private]]
    gen-samples --rows 1000000 --shard 3/16 --out /shared/run        # one machine of a fleet
    gen-samples push out/catalogue --repo user/name [--private]       # push a run written earlier
    gen-samples push out/catalogue --repo user/name --force           # even an incomplete / failed one
    gen-samples report out/catalogue                                  # (re)build report.html of a run

Bad input is one line on stderr starting with ``gen-samples: error:`` and exit code 2, with nothing
written.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from generator.cli_parser import OneLineParser, fail, path_arg

PROG = "gen-samples"


def _fail(message: str, code: int = 2):
    fail(PROG, message, code)


def _positive_int(flag: str):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number >= 1 (got {text!r})") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number >= 1 (got {text!r})")
        return value
    return parse


def _non_negative_int(flag: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number >= 0 (got {text!r})")
        return value
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"--test-fraction must be a number from 0 to below 1, e.g. 0.1 (got {text!r})")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard must be i/N with 0 <= i < N, e.g. 0/4 (got {text!r})")
    return i, n


def default_workers() -> int:
    """All cores (up to 8) by default: rows are a pure function of (seed, index), so more workers only
    make the same bytes sooner."""
    import os

    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def build_parser() -> argparse.ArgumentParser:
    from generator.api import GenerateConfig

    d = GenerateConfig()
    p = OneLineParser(prog=PROG, description="Generate a synthetic product catalogue (images + metadata) as parquet "
                "shards with a dataset card and report.html. `gen-samples push DIR --repo ID` pushes a run written earlier; "
                "`gen-samples report DIR` rebuilds its report.")
    p.add_argument("--rows", type=_positive_int("--rows"), default=d.rows, help=f"rows in all (default {d.rows})")
    p.add_argument("--seed", type=_non_negative_int("--seed"), default=d.seed, help="same seed, same bytes")
    p.add_argument("--out", type=path_arg("--out"), default=None, help="output folder (default out/<taxonomy>-<rows>rows-seed<seed>)")
    p.add_argument("--image-size", type=_positive_int("--image-size"), default=d.image_size,
                   help=f"square image side in pixels (default {d.image_size})")
    p.add_argument("--test-fraction", type=_fraction, default=d.test_fraction,
                   help=f"share of rows in the test split (default {d.test_fraction})")
    p.add_argument("--taxonomy", type=path_arg("--taxonomy"), default=d.taxonomy, metavar="NAME_OR_PATH",
                   help="built-in taxonomy name or path to a .toml file (default burberry_us)")
    p.add_argument("--rows-per-shard", type=_positive_int("--rows-per-shard"), default=d.rows_per_shard,
                   help=argparse.SUPPRESS)
    p.add_argument("--jpeg-quality", type=_positive_int("--jpeg-quality"), default=d.jpeg_quality,
                   help=argparse.SUPPRESS)
    p.add_argument("--source", type=path_arg("--source"), default=None, metavar="PATH_OR_HUB_ID",
                   help="augment this real catalogue (CSV/parquet table, folder, saved dataset or Hub id) "
                        "instead of synthesising rows")
    p.add_argument("--privacy", choices=("strict", "standard", "off"), default=d.privacy,
                   help=f"privacy guard thresholds; every dataset gets a privacy report (default {d.privacy})")
    p.add_argument("--num-proc", type=_positive_int("--num-proc"), default=default_workers(),
                   help="worker processes (default: this machine's cores, up to 8; the output is identical "
                        "for any value)")
    p.add_argument("--shard", type=_shard, default=None, metavar="i/N",
                   help="write only this machine's share of the shard files (a fleet builds one dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out once the new run is complete")
    p.add_argument("--resume", action="store_true", help="finish an interrupted run in --out (complete shards are kept)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--push", nargs="?", const="", default=None, metavar="REPO_ID", type=_repo_id("--push"),
                   help="push to the Hugging Face Hub after writing (default repo: <user>/<brand>-<country>-<rows>-rows)")
    p.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return p


def _repo_id(flag: str):
    """argparse type: a repo id checked before any work, so a token pasted as one is refused, unechoed."""
    def parse(text: str) -> str:
        from generator import hub

        if text:  # "" means the default repo, as leaving the option out does
            try:
                hub.check_repo_id(text, flag=flag)
            except hub.LocalRunError as err:
                raise argparse.ArgumentTypeError(str(err)) from None  # its own message: argparse's would echo text
        return text
    return parse


def build_push_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} push", error_prog=PROG, description="Push a run written by gen-samples to the Hugging Face Hub.")
    p.add_argument("dir", type=path_arg("dir"), help="the folder gen-samples wrote")
    p.add_argument("--repo", type=_repo_id("--repo"), default=None,
                   help="REPO_ID, e.g. user/name (default <user>/<brand>-<country>-<rows>-rows)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--force", action="store_true",
                   help="push a run that is incomplete or failed its privacy check anyway (refused otherwise); "
                        "a warning is printed and put at the top of its card")
    return p


def build_report_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} report", error_prog=PROG,
                      description="(Re)build report.html (and the card's report_*.png figures) of a folder gen-samples wrote.")
    p.add_argument("dir", type=path_arg("dir"), help="the folder gen-samples wrote")
    p.add_argument("--num-proc", type=_positive_int("--num-proc"), default=default_workers(),
                   help="processes that make the thumbnails (default: this machine's cores, up to 8; same bytes)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["push"]:
        args = build_push_parser().parse_args(argv[1:])
        return _push(args.dir, args.repo or None, args.private, force=args.force)
    if argv[:1] == ["report"]:
        args = build_report_parser().parse_args(argv[1:])
        return _report(args.dir, args.num_proc, args.quiet)
    args = build_parser().parse_args(argv)
    return _generate(args)


def _generate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from generator.api import GenerateConfig, GenerateError, write_run
    from generator.taxonomy import TaxonomyError

    console = Console(stderr=True)
    try:
        config = GenerateConfig(rows=args.rows, seed=args.seed, image_size=args.image_size,
                                test_fraction=args.test_fraction, taxonomy=args.taxonomy, num_proc=args.num_proc,
                                rows_per_shard=args.rows_per_shard, jpeg_quality=args.jpeg_quality, out=args.out,
                                source=args.source, privacy=args.privacy)
        report = write_run(config, args.out, overwrite=args.overwrite, resume=args.resume, shard=args.shard,
                           quiet=args.quiet, console=console)
    except (GenerateError, TaxonomyError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; complete shards are kept: run the same command with --resume to finish",
              file=sys.stderr)
        return 130
    if report.source_summary and not args.quiet:
        console.print(f"source: {report.source_summary}", soft_wrap=True, highlight=False)
    if not args.quiet:
        done = "complete" if report.complete else f"{report.shards_missing} shard files still to come from other machines"
        skipped = f", {len(report.shards_skipped)} shards already there" if report.shards_skipped else ""
        console.print(f"{report.rows_written:,} rows in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s)"
                      f"{skipped} -> {report.out} ({done})", soft_wrap=True, highlight=False)
        if not report.complete:
            console.print("When every machine is done, run the same command without --shard and with --resume "
                          "in the gathered folder to write the card.", soft_wrap=True, highlight=False)
    if not report.privacy_passed:
        from generator.privacy import failure_message  # what failed, its numbers, what would pass

        _fail(failure_message(report.out), code=1)
    if args.push is not None:
        if not report.complete:
            _fail("--push needs a complete run; push once every shard is written")
        return _push(str(report.out), args.push or None, args.private)
    return 0


def _report(folder: str, num_proc: int, quiet: bool) -> int:
    import time

    from generator.api import ReportError, write_dataset_report

    t0 = time.perf_counter()
    try:
        path = write_dataset_report(folder, num_proc=num_proc)
    except ReportError as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot write the report into {folder}: {err.strerror or err}")
    if not quiet:
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return 0


def _push(local_dir: str, repo_id: str | None, private: bool, force: bool = False) -> int:
    from generator import hub
    from generator.api import push_dir

    try:
        push_dir(local_dir, repo_id, private=private, force=force)
    except hub.LocalRunError as err:
        _fail(str(err))  # bad input (an incomplete or failed run, a token as repo id): exit 2, nothing sent
    except hub.PushError as err:
        # One line: what went wrong, then where the data still is.
        print(f"{PROG}: error: {' '.join(str(err).split())} (local copy kept at {local_dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
