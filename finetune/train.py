"""The training loop: ``train(config)``, the notebook API; ``run-finetune`` is a thin layer over it.

The run's parts (model, LoRA or full fine-tuning, speed levers, AdamW with warmup and cosine decay,
loader, checkpoints, evaluation) are set up by ``Recipe`` (finetune/recipe.py); one optimizer step
over its micro-batches is a ``TrainStep`` (finetune/step.py). A run directory holds::

    OUT/config.json          the settings of the run
    OUT/processor/           tokenizer + image processor (the built-in models' tokenizer is trained here)
    OUT/checkpoints/step-N/  trainable weights, optimizer, scheduler, RNG states, data position
    OUT/final/               the trained model (built-in: merged weights; real + LoRA: the adapter)
    OUT/metrics.json, OUT/predictions.jsonl, OUT/train_log.jsonl, OUT/wandb/
"""
from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console

from .checkpoints import latest_checkpoint
from .config import FinetuneConfig, RunResult
from .recipe import Recipe, Throughput, prepare_model
from .speed.gc import collect_every

__all__ = ["RunResult", "latest_checkpoint", "prepare_model", "train"]


def train(config: FinetuneConfig, *, console: Console | None = None,
          on_step: Callable[[int], None] | None = None) -> RunResult:
    """Fine-tune, evaluate and save; returns where everything went and the metrics.

    ``on_step(step)`` is called after every optimizer step (and its checkpoint, if one was due).
    """
    run = Recipe(config, console)
    run.setup()   # run folder, processes, data, model, speed levers, optimizer, schedule, loader, step
    cfg, state, total = run.cfg, run.state, run.total_steps
    clock = Throughput()
    try:
        with run.progress() as bar, collect_every() as collector:
            while state.step < total:
                t0 = time.perf_counter()
                out = run.step(run.next_micro_batches())   # forward + backward of each, clip, AdamW, schedule
                due_log = state.step % cfg.log_every == 0 or state.step == total
                due_save = (cfg.save_every and state.step % cfg.save_every == 0) or state.step == total
                due_eval = bool(cfg.eval_every) and state.step % cfg.eval_every == 0 and state.step < total
                if clock.first_step is None or due_log or due_save or due_eval or on_step is not None:
                    run.read_back(out)   # the only place the host waits for the device
                clock.add(t0, out.rows)
                if due_log:
                    run.log(bar, clock)
                if due_eval:
                    run.evaluate()
                    clock.window_start = time.perf_counter()
                if due_save:
                    run.save()
                    clock.window_start = time.perf_counter()
                if on_step is not None:
                    on_step(state.step)
                collector.step(state.step)
        run.finish(clock)   # evaluation, metrics.json and the final model, on rank 0
    finally:
        run.close()
    return run.result(clock)
