"""``run-finetune``: argument parsing and error messages over :func:`finetune.train.train` (no logic here).

    run-finetune --dataset out/catalogue --model tiny --max-steps 200
    run-finetune --config run.toml --lr 1e-4           # flags win over the file
    run-finetune --preset fast --no-fused-lora         # one speed lever (group "speed") over the preset
    run-finetune                                        # generates the default catalogue, then trains
    run-finetune report runs/finetune                   # (re)build report.html of a finished run
    run-finetune export runs/finetune --out merged      # merged 16-bit weights + processor of a finished run
    run-finetune --list-models                          # the built-in models: class, parameters, image tokens

Bad input is one line on stderr starting with ``run-finetune: error:`` and exit code 2; out of memory
and other failures at run time exit 1; Ctrl-C exits 130 with a hint about ``--resume``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from generator.cli_parser import OneLineParser, fail, path_arg

from .config import FinetuneError, load_config
from .speed.allocator import use_expandable_segments
from .speed.config import LEVER_HELP, PRESETS, levers

PROG = "run-finetune"
# The product's default catalogue, as `gen-samples` makes it with no flags: both tools share its folder.
DEFAULT_ROWS = 3040
DEBUG_ENV = "RUN_FINETUNE_DEBUG"


def _fail(message: str, code: int = 2):
    fail(PROG, message, code)


def _number(flag: str, kind: type, minimum: float, strict: bool = False):
    what = {int: "a whole number", float: "a number"}[kind]
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{flag} must be {what} {bound} (got {text!r})")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    # Every default is SUPPRESS: a flag that is not given leaves the config file's value (or the
    # FinetuneConfig default) alone, which is how flags win over the file and nothing else does.
    p = OneLineParser(prog=PROG, argument_default=argparse.SUPPRESS,
                description="Fine-tune a vision-language model on a product catalogue and evaluate it against "
                            "baselines. Without --dataset, the default synthetic catalogue is generated "
                            f"({DEFAULT_ROWS} rows, reused when already there). run-finetune --list-models "
                            "lists the built-in models.")
    p.add_argument("--config", type=path_arg("--config"), metavar="FILE", help="settings from a .toml or .yaml file; flags override them")
    p.add_argument("--dataset", metavar="DIR_OR_REPO", help="a gen-samples folder, a saved dataset or a Hub dataset id")
    p.add_argument("--model", help="tiny | small | tiny-llava | phi3v-shape | tiny-qwen2.5-vl | tiny-gemma3 | tiny-smolvlm "
                                   "(built-in, random weights: --list-models) | a local path | a cached Hub id")
    p.add_argument("--method", choices=("lora", "full"), help="LoRA adapters (default) or full fine-tuning")
    p.add_argument("--epochs", type=_number("--epochs", float, 0, strict=True))
    p.add_argument("--batch-size", type=_number("--batch-size", int, 1))
    p.add_argument("--grad-accum", type=_number("--grad-accum", int, 1), help="micro-batches per optimizer step")
    p.add_argument("--lr", type=_number("--lr", float, 0, strict=True), help="peak learning rate")
    p.add_argument("--max-steps", type=_number("--max-steps", int, 0), help="optimizer steps; > 0 overrides --epochs")
    p.add_argument("--eval-every", type=_number("--eval-every", int, 0),
                   help="steps between evaluations (0: at the end)")
    p.add_argument("--save-every", type=_number("--save-every", int, 0),
                   help="steps between checkpoints (0: at the end)")
    p.add_argument("--seed", type=_number("--seed", int, 0))
    p.add_argument("--out", metavar="DIR", help="the run folder (default runs/finetune)")
    p.add_argument("--wandb-project", metavar="NAME")
    p.add_argument("--no-wandb", action="store_true", help="no Weights & Biases (else offline without an API key)")
    p.add_argument("--trust-remote-code", action=argparse.BooleanOptionalAction,
                   help="allow models that run their own code (Phi-3-vision)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction,
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction,
                   help="random crops and mirrors of the training images (default off)")
    p.add_argument("--answer-noise", type=_number("--answer-noise", float, 0), metavar="X",
                   help="share of answer tokens the model reads swapped for another of its answer's tokens "
                        "while training (labels stay true); default 0.15 for tiny, else 0")
    p.add_argument("--vision-warmup-epochs", type=_number("--vision-warmup-epochs", float, 0), metavar="N",
                   help="passes over the training images the vision side first trains as a classifier of the "
                        "answers (category, title words, price) before the fine-tune; default 36 for tiny, else 0")
    p.add_argument("--max-image-tokens", type=_number("--max-image-tokens", int, 1), metavar="N",
                   help="the most tokens one image may take: lowers the image size of dynamic-resolution models "
                        "(Qwen2-VL max_pixels, LLaVA-NeXT anyres grids, Idefics3/SmolVLM longest_edge); "
                        "fixed-size models say why it does not apply")
    fast, low = PRESETS["fast"], PRESETS["low-memory"]
    p.add_argument("--preset", choices=tuple(PRESETS),
                   help=f"speed levers: fast (compiled layers, no attention mask, widths padded to "
                        f"{fast.pad_to_multiple_of}, activation memory budget {fast.activation_memory_budget}, "
                        f"LoRA added in the base matmul, a frozen tower's image features cached after the "
                        f"first epoch, the last MLP at the answer positions only, batch {fast.batch_size}), "
                        f"low-memory (budget {low.activation_memory_budget}, batch {low.batch_size}); "
                        f"compilation needs CUDA. Default none")
    p.add_argument("--lora-dropout", type=_number("--lora-dropout", float, 0),
                   help="dropout on the LoRA input (default 0.05; 0 under a preset)")
    p.add_argument("--fsdp", action=argparse.BooleanOptionalAction,
                   help="shard full fine-tuning over processes (default when there are several); --no-fsdp: DDP")
    p.add_argument("--num-workers", type=_number("--num-workers", int, 0), help="DataLoader worker processes")
    p.add_argument("--max-eval-samples", type=_number("--max-eval-samples", int, 1),
                   help="evaluate on the first N test rows")
    p.add_argument("--warmup-department", action=argparse.BooleanOptionalAction,
                   help="the vision warm-up also learns category1_code (the department: it sets the price but is "
                        "not in the answer); off by default")
    p.add_argument("--price-mbr", action=argparse.BooleanOptionalAction,
                   help="answer the price the model's own probabilities say is least wrong in percent, among the "
                        "train split's prices of the answered category (default); --no-price-mbr: the greedy price")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction,
                   help="at the end, also write OUT/merged: the model with LoRA merged, bf16, beside its processor "
                        "(what run-finetune export writes)")
    _add_speed_group(p)
    return p


# The speed flags' dests carry this prefix; parse_config gathers them into FinetuneConfig.speed.
SPEED_DEST = "speed."


def _add_speed_group(p: argparse.ArgumentParser) -> None:
    """One flag a lever (speed.config.levers), each winning over --preset and the config file's [speed] table."""
    group = p.add_argument_group("speed", "levers one at a time; each wins over --preset and the config "
                                          "file's [speed] table")
    for name, annotation in levers().items():
        flag = "--" + name.replace("_", "-")
        kinds = typing.get_args(annotation) or (annotation,)
        extra: dict = {}
        if bool in kinds:
            extra["action"] = argparse.BooleanOptionalAction
        elif int in kinds:
            extra.update(type=_number(flag, int, 1), metavar="N")
        elif float in kinds:
            extra.update(type=_number(flag, float, 0, strict=True), metavar="X")
        else:
            extra["metavar"] = name.split("_")[-1].upper()
        group.add_argument(flag, dest=SPEED_DEST + name, help=LEVER_HELP.get(name), **extra)


def parse_config(argv: Sequence[str] | None = None):
    """The ``FinetuneConfig`` of a command line: the config file, then the flags on top."""
    overrides = vars(build_parser().parse_args(argv))
    path = overrides.pop("config", None)
    speed = {k[len(SPEED_DEST):]: overrides.pop(k) for k in list(overrides) if k.startswith(SPEED_DEST)}
    if speed:
        overrides["speed"] = speed
    return load_config(path, **overrides)


def default_dataset(console) -> str:
    """The default catalogue's folder, generated once; a second run reuses (or finishes) it."""
    from generator.api import GenerateConfig, default_out, generate_to_dir  # deferred: see _run

    config = GenerateConfig(rows=DEFAULT_ROWS)
    out = default_out(config)
    console.print(f"no --dataset: using the default catalogue in {out} (generated if missing)", highlight=False)
    # resume=True: a complete folder is verified and kept, an interrupted one is finished.
    return str(generate_to_dir(config, out, resume=True))


def build_report_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} report", error_prog=PROG,
                      description="(Re)build report.html of a finished run folder: training curves, the evaluation "
                                  "beside its baselines and the data's limit, and every test prediction.")
    p.add_argument("dir", type=path_arg("dir"), help="the run folder (run-finetune's --out)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    return p


def _report(argv: Sequence[str]) -> int:
    args = build_report_parser().parse_args(list(argv))
    from .report import RunReportError, write_run_report  # deferred: no torch, but the generator's report code

    try:
        path = write_run_report(args.dir)
    except RunReportError as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot write the report into {args.dir}: {err.strerror or err}")
    if not args.quiet:
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def build_export_parser() -> argparse.ArgumentParser:
    from .export import DEFAULT_DTYPE, DTYPES, MERGED  # no torch: the constants only

    p = OneLineParser(prog=f"{PROG} export", error_prog=PROG,
                      description="Write a finished run's model as one folder that loads anywhere: LoRA merged into "
                                  "the weights (vision tower and projector included), cast to 16 bits, beside the "
                                  "processor; AutoModelForImageTextToText.from_pretrained(DIR) loads it, no peft.")
    p.add_argument("run", help="the run folder (run-finetune's --out)")
    p.add_argument("--out", metavar="DIR", help=f"where to write (default RUN/{MERGED}); replaced atomically")
    p.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE, help=f"weights' dtype (default {DEFAULT_DTYPE})")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    return p


def _export(argv: Sequence[str]) -> int:
    args = build_export_parser().parse_args(list(argv))
    from .export import export_run  # deferred: torch

    try:
        result = export_run(args.run, args.out, dtype=args.dtype)
    except FinetuneError as err:
        _fail(str(err), err.exit_code)
    except OSError as err:
        _fail(f"cannot write the export: {err.strerror or err}", 1)
    except Exception as err:  # noqa: BLE001 - one line, as a run's failures are, unless debugging
        if os.environ.get(DEBUG_ENV):
            raise
        first = (str(err).strip().splitlines() or [""])[0]
        _fail(f"{type(err).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback)", 1)
    if not args.quiet:
        print(f"{result.out} ({result.dtype}, {result.bytes / 1e6:.1f} MB; {result.report.lora_layers} LoRA layers "
              f"merged from {result.report.source})")
    return 0


def entry() -> typing.NoReturn:
    """The ``run-finetune`` command (and ``python -m finetune``): ``main`` and the process's exit."""
    if not _launched():
        raise SystemExit(main())
    try:
        code = main()
    except SystemExit as done:   # _fail's one-line error, argparse's --help
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    _exit_launched_worker(code)


def _launched() -> bool:
    """Whether this process is one of several started by torchrun / accelerate launch (read without torch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _exit_launched_worker(code: int) -> typing.NoReturn:
    """End a process started by torchrun / accelerate launch without the interpreter's teardown.

    The run is over by now: the process group destroyed, the tracker finished, the files written. A
    normal exit then destroys the collective backend's C++ objects during interpreter finalization
    and static destruction, where a worker thread still alive aborts the process ("terminate called
    without an active exception", SIGABRT; see pytorch/pytorch#179291). CI saw it once in a finished
    two-process FSDP run, and the launcher failed the whole run for it. ``os._exit`` skips that
    teardown; the output streams are flushed first. Only the command does this: ``main`` returns.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:
        return _report(argv[1:])
    if argv[:1] == ["export"]:
        return _export(argv[1:])
    if "--list-models" in argv:
        return _list_models()
    use_expandable_segments()   # before anything touches CUDA (finetune/speed/allocator.py)
    try:
        config = parse_config(argv)
    except FinetuneError as err:
        _fail(str(err), err.exit_code)
    return _run(config)


def _list_models() -> int:
    """The built-in models as a table on stdout: class, parameter count, image tokens a sample."""
    from rich.table import Table

    from .models import describe_builtins  # deferred: torch and transformers

    table = Table(title="built-in models (random weights; parameters at the default 2,048-token vocabulary)")
    for column in ("model", "transformers class", "parameters", "image tokens a sample"):
        table.add_column(column, justify="right" if column in ("parameters", "image tokens a sample") else "left")
    for row in describe_builtins():
        table.add_row(row["name"], row["class"], f"{row['parameters']:,}", str(row["image_tokens"]))
    Console(width=max(100, Console().width)).print(table)
    return 0


def _run(config) -> int:
    # Deferred: the generator and the training stack (torch, transformers) take seconds to import, and
    # --help or a bad flag needs neither.
    from generator.api import GenerateError

    console = Console(stderr=True)
    try:
        if config.dataset is None:
            if _launched():
                raise FinetuneError("several processes would all generate the default catalogue at once: run "
                                    "gen-samples first and pass its folder with --dataset")
            config.dataset = default_dataset(console)
        from .train import train  # deferred: torch

        result = train(config, console=console)
    except (FinetuneError, GenerateError) as err:
        _fail(str(err), getattr(err, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {_resume_hint(config)}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a failure at run time is one line too, unless debugging
        if os.environ.get(DEBUG_ENV):
            raise
        # train() turns an OOM in a training step into a FinetuneError; this catches the rest
        # (model loading, evaluation), without importing torch here.
        if type(err).__name__ in ("OutOfMemoryError", "MemoryError"):
            _fail("out of memory: lower --batch-size (evaluation uses twice that) and raise --grad-accum to keep "
                  "the effective batch, or add --gradient-checkpointing", 1)
        first = (str(err).strip().splitlines() or [""])[0]
        _fail(f"{type(err).__name__}: {first} (set {DEBUG_ENV}=1 for the traceback)", 1)
    if os.environ.get("RANK", "0") == "0":  # under torchrun / accelerate launch, rank 0 speaks for the run
        console.print(f"done: {result.steps} steps, results in {result.out}", highlight=False)
    return 0


def _resume_hint(config) -> str:
    from .checkpoints import latest_checkpoint  # deferred: torch

    if config.dataset is None:
        return "the default catalogue was being generated: run the same command again to finish it"
    out = Path(config.out)
    checkpoint = latest_checkpoint(out)
    if checkpoint is None:
        return f"no checkpoint was written to {out} yet, so there is nothing to resume"
    return f"the last checkpoint is {checkpoint}: run the same command with --resume to continue from it"
