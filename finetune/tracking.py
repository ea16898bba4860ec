"""Where a run reports: Weights & Biases (online, offline or off), a JSON-lines log in the run folder,
and a rich progress bar."""
from __future__ import annotations

import json
import math
import netrc
import os
import resource
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

WANDB_HOST = "api.wandb.ai"


def wandb_mode(no_wandb: bool = False) -> str:
    """``disabled`` with --no-wandb; else WANDB_MODE if set; else online only when a key is configured.

    Without an API key (no WANDB_API_KEY, no netrc login) an online run would stop to ask for
    one; offline runs log to disk and can be synced later with ``wandb sync``.
    """
    if no_wandb:
        return "disabled"
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_wandb_key() else "offline"


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


LOG_FILE = "train_log.jsonl"


class Tracker:
    """A W&B run for one fine-tuning run (a no-op when disabled), and ``OUT/train_log.jsonl``.

    The run id is kept in ``OUT/wandb_run_id`` so a resumed run keeps logging to the same W&B run.
    The JSON-lines log (one ``{"step": ..., "train/loss": ...}`` object a log step, eval scalars too)
    is written whenever ``local`` is set, W&B or not, so a run without W&B keeps its loss and
    throughput curve; a run resumed at ``start_step`` first drops the lines the interrupted run wrote
    after that step, as its steps are about to run again.
    """

    def __init__(self, config: dict[str, Any], out: Path, *, project: str, mode: str, local: bool = True,
                 start_step: int = 0):
        self.run = None
        self.mode = mode
        self.log_path = out / LOG_FILE if local else None
        if self.log_path is not None:
            _keep_until(self.log_path, start_step)
        if mode == "disabled":
            return
        import wandb  # optional and heavy: only a run that logs to W&B loads it

        out.mkdir(parents=True, exist_ok=True)
        id_file = out / "wandb_run_id"
        # Our own id: wandb's id helper has moved between releases.
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(
            project=project,
            config=config,
            dir=str(out),
            mode=mode,
            id=run_id,
            resume="allow",
            name=out.name,
            settings=wandb.Settings(silent=True, x_disable_stats=True),
        )

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log(self, data: dict[str, Any], step: int) -> None:
        self._append(data, step)
        if self.run is not None:
            self.run.log(data, step=step)

    def _append(self, data: dict[str, Any], step: int) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Strict JSON for any reader: NaN (a metric with no parsed rows) becomes null, as in metrics.json.
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in data.items()}
        with self.log_path.open("a") as f:
            f.write(json.dumps({"step": step, **row}, allow_nan=False) + "\n")

    def log_eval(self, metrics: dict[str, Any], step: int, samples: list[dict] | None = None, *,
                 samples_seen: int | None = None) -> None:
        """Eval metrics (flattened as ``eval/...``) and, to W&B, a table of sample predictions with images.

        The line also holds ``samples_seen``, the training rows seen so far (given, or the final
        metrics' ``train.samples``), so accuracy can be plotted against samples as well as steps.
        """
        flat = {f"eval/{k}": v for k, v in metrics.get("model", {}).items() if isinstance(v, (int, float))}
        if samples_seen is None:
            samples_seen = (metrics.get("train") or {}).get("samples")
        if samples_seen is not None:
            flat["samples_seen"] = samples_seen
        for name, values in metrics.get("baselines", {}).items():
            flat.update({f"baseline/{name}/{k}": v for k, v in values.items() if isinstance(v, (int, float))})
        self._append(flat, step)
        if self.run is None:
            return
        import wandb  # optional and heavy: only a run that logs to W&B loads it

        if samples:
            table = wandb.Table(columns=["image", "prediction", "truth", "category_correct", "price_error"])
            for s in samples:
                table.add_data(wandb.Image(s["image"]) if s.get("image") is not None else None,
                               s["prediction"], s["truth"], s["category_correct"], s["price_error"])
            flat["eval/predictions"] = table
        self.run.log(flat, step=step)
        self.run.summary.update({k: v for k, v in flat.items() if k != "eval/predictions"})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _keep_until(path: Path, step: int) -> None:
    """Drop the lines of ``path`` logged after ``step`` (all of them from step 0), atomically."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True) if _step_of(line) <= step] if step else []
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)


def _step_of(line: str) -> float:
    """A log line's step; a line cut short by a killed run counts as after every step."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


def memory_gib(device) -> float:
    """Peak memory so far: the GPU's allocated peak on CUDA, the process's peak RSS on CPU."""
    import torch  # heavy: the log and the W&B side of this module serve scoring without torch too

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux


class TrainProgress:
    """The training bar: step, loss, learning rate, samples/s and memory."""

    def __init__(self, total_steps: int, start: int = 0, console: Console | None = None):
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} samples/s  "
                       "mem {task.fields[mem]} GiB"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start,
                                           loss="-", lr="-", speed="-", mem="-")

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def update(self, step: int, loss: float, lr: float, samples_per_s: float, mem_gib: float) -> None:
        self.progress.update(self.task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                             speed=f"{samples_per_s:.1f}", mem=f"{mem_gib:.1f}")
