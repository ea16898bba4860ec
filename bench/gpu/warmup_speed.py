"""The vision warm-up's seconds a step on a GPU, with several runs sharing the host, as
bench/gpu/accuracy.sh runs them (issue 18, run 0011: four runs at once, the warm-up took 380 s of
tiny's 492 s where the 2-core CPU takes 79 s).

    python3 bench/gpu/warmup_speed.py DATASET [--procs 4] [--epochs 4] [--host-pictures]

Starts ``--procs`` processes at once; each builds ``tiny`` on the GPU and runs the warm-up alone
(``finetune.vision_warmup.warm_up``) for ``--epochs`` passes, then prints one JSON line: its seconds,
the picture preparation's, and the steps'. ``--host-pictures`` times the former code, where each step
gathered and mirrored the pictures on the host before copying them over.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _former_batch(self, rows, mirrored, device, dtype):
    """Pictures.batch before the pictures moved to the device (commit 861243c)."""
    import torch

    x = self.tensor[rows]
    x = torch.where(mirrored.view(-1, 1, 1, 1), x.flip(-1), x)
    return {"pixel_values": x.to(device, dtype)}


def one(dataset: str, epochs: float, host: bool, queue) -> None:
    import torch
    from datasets import load_dataset
    from rich.console import Console

    from finetune import vision_warmup
    from finetune.models import load_model
    from finetune.tokenizer import train_tokenizer

    split = load_dataset("parquet", data_dir=f"{dataset}/data")["train"]
    loaded = load_model("tiny", tokenizer=train_tokenizer(split["title"], vocab_size=2048), device=torch.device("cuda"))
    # warm_up calls Pictures(...).to(device) once the pictures are prepared: that call stamps the time, so the
    # preparation and the steps are timed apart without preparing the pictures twice.
    former_to, stamps = vision_warmup.Pictures.to, []

    def stamped_to(self, device):
        stamps.append(time.perf_counter())
        return self if host else former_to(self, device)   # --host-pictures: they stay on the host

    vision_warmup.Pictures.to = stamped_to
    if host:
        vision_warmup.Pictures.batch = _former_batch
    config = vision_warmup.WarmupConfig(epochs=epochs)
    start = time.perf_counter()
    vision_warmup.warm_up(loaded.model, loaded.processor.image_processor, split, config, console=Console(quiet=True))
    torch.cuda.synchronize()
    end = time.perf_counter()
    steps = max(1, round(epochs * math.ceil(len(split) / config.batch_size)))   # as warm_up counts them
    queue.put({"seconds": round(end - start, 2), "pictures_seconds": round(stamps[0] - start, 2),
               "ms_per_step": round(1000 * (end - stamps[0]) / steps, 1)})


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--host-pictures", action="store_true")
    a = p.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=one, args=(a.dataset, a.epochs, a.host_pictures, queue)) for _ in range(a.procs)]
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    print(json.dumps({"procs": a.procs, "epochs": a.epochs, "host_pictures": a.host_pictures, "runs": results}))


if __name__ == "__main__":
    main()
