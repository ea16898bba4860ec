"""The reference image classifier: how much of the data's limit the pictures really deliver.

The dataset card states what a perfect reader of the images could score (generator/limits). This
probe measures what a plain reader gets: the built-in ``tiny`` model's own vision tower (a small
ResNet, made from the same config), average-pooled, with one linear head a label (category3,
category2, and the colour, material and pattern its title names) and one for log price, trained from scratch on the train split and scored on the test
split the fine-tune uses. So a renderer change that blurs a signal shows here in seconds, without a
fine-tune, and the gap between the probe and ``run-finetune`` is what the VLM recipe leaves behind.

``python -m bench.probe DATASET`` prints the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from dataclasses import asdict, dataclass

from generator import taxonomy as taxonomies

COLUMNS = ("category3_code", "category2_code")
# Labels read from the title by the taxonomy's names (longest first): what the card's limits score too.
TITLE_LABELS = ("colour", "material", "pattern")
NONE = "(none)"
LABELS = COLUMNS + TITLE_LABELS


@dataclass(frozen=True)
class ProbeConfig:
    epochs: int = 18
    image_size: int = 64
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    # Mirror half the pictures: every label survives a mirror, and it measured +1.5 points of category3.
    flip: bool = True
    taxonomy: str = "burberry_us"   # whose colour, material and pattern names the titles are read by


def _labels(ds, names: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each row's labels: category3 and category2 from their columns, colour, material and pattern from
    the title (the taxonomy's names as whole words, longest first; ``NONE`` where the title has none)."""
    titles = [f" {' '.join(t.split())} " for t in ds["title"]]
    out = {k: list(ds[k]) for k in COLUMNS}
    for label in TITLE_LABELS:
        ordered = sorted(names[label], key=len, reverse=True)
        out[label] = [next((n for n in ordered if f" {n} " in t), NONE) for t in titles]
    return out


def _title_names(taxonomy: str) -> dict[str, list[str]]:
    tax = taxonomies.load(taxonomy)
    return {"colour": [c.name for c in tax.colours], "material": [m.name for m in tax.materials],
            "pattern": [p.name for p in tax.patterns if p.name]}


def _images(ds, size: int):
    """The split's pictures as tiny's own image processor gives them to the model: [n, 3, size, size]
    (read as the vision warm-up reads them: a chunk at a time, an unreadable one white)."""
    from finetune.builtins import _clip_image_processor
    from finetune.vision_warmup import Pictures

    return Pictures(ds, _clip_image_processor(size), mirror=False).tensor


class _Probe:
    """tiny's ResNet tower, average-pooled, with a linear head a label and one for log price."""

    def __init__(self, classes: dict[str, list[str]]):
        import torch
        from transformers import ResNetModel

        from finetune.builtins import BUILTIN_MODELS, _resnet_config

        tower = BUILTIN_MODELS["tiny"].tower
        self.tower = ResNetModel(_resnet_config(tower))
        width = tower.widths[-1]
        self.heads = torch.nn.ModuleDict({k.replace(".", "_"): torch.nn.Linear(width, len(v)) for k, v in classes.items()})
        self.price = torch.nn.Linear(width, 1)
        self.modules = torch.nn.ModuleList([self.tower, self.heads, self.price])

    def __call__(self, x):
        pooled = self.tower(pixel_values=x).pooler_output.flatten(1)
        return {k: h(pooled) for k, h in self.heads.items()}, self.price(pooled).squeeze(-1)


def run_probe(dataset: str, config: ProbeConfig = ProbeConfig()) -> dict:
    """Train the probe on ``dataset``'s train split and score it on the test split (the fine-tune's)."""
    import torch

    from finetune.data import load_splits

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    splits = load_splits(dataset)
    train, test = splits["train"], splits["test"]
    labels = {s: _labels(ds, _title_names(config.taxonomy)) for s, ds in splits.items()}
    classes = {k: sorted(set(labels["train"][k]) | set(labels["test"][k])) for k in LABELS}
    targets = {s: {k: torch.tensor([classes[k].index(v) for v in rows]) for k, rows in split.items()}
               for s, split in labels.items()}
    log_price = {s: torch.tensor([math.log(max(p, 1.0)) for p in ds["full_price"]]) for s, ds in splits.items()}
    x_train, x_test = _images(train, config.image_size), _images(test, config.image_size)
    probe = _Probe(classes)
    optimizer = torch.optim.AdamW(probe.modules.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(x_train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.epochs):
        probe.modules.train()
        for batch in torch.randperm(len(x_train), generator=generator).split(config.batch_size):
            x = x_train[batch]
            if config.flip:
                mirror = torch.rand(len(batch), generator=generator) < 0.5
                x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
            logits, price = probe(x)
            loss = sum(torch.nn.functional.cross_entropy(logits[k.replace(".", "_")], targets["train"][k][batch])
                       for k in LABELS)
            loss = loss + torch.nn.functional.l1_loss(price, log_price["train"][batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return _score(probe, x_test, targets["test"], log_price["test"], classes, config)


def _score(probe, x, targets, log_price, classes: dict[str, list[str]], config: ProbeConfig) -> dict:
    """Accuracy a label, price MAPE (%), and each label's most frequent confusions (true, read, count)."""
    import torch

    probe.modules.eval()
    with torch.no_grad():
        logits, price = probe(x)
    out: dict = {}
    confusions: dict[str, list] = {}
    for k in LABELS:
        read = logits[k.replace(".", "_")].argmax(-1)
        out[f"{k.removesuffix('_code')}_accuracy"] = (read == targets[k]).float().mean().item()
        pairs = Counter((classes[k][t], classes[k][r]) for t, r in zip(targets[k].tolist(), read.tolist()) if t != r)
        confusions[k.removesuffix("_code")] = [[t, r, n] for (t, r), n in pairs.most_common(6)]
    truth = log_price.exp()
    out["price_mape"] = (100 * ((price.exp() - truth).abs() / truth).mean()).item()
    out["n_test"] = len(x)
    out["confusions"] = confusions
    out["config"] = asdict(config)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="a gen-samples output folder (or any dataset run-finetune reads)")
    parser.add_argument("--epochs", type=int, default=ProbeConfig.epochs)
    parser.add_argument("--seed", type=int, default=ProbeConfig.seed)
    parser.add_argument("--image-size", type=int, default=ProbeConfig.image_size)
    parser.add_argument("--taxonomy", default=ProbeConfig.taxonomy)
    args = parser.parse_args(argv)
    config = ProbeConfig(epochs=args.epochs, seed=args.seed, image_size=args.image_size, taxonomy=args.taxonomy)
    print(json.dumps(run_probe(args.dataset, config), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
