"""Small synthetic catalogue datasets for the fine-tune tests (no generator, no network).

Each category3 has its own shape and colour, drawn on a plain background with a little jitter,
so a model can learn the category from the pixels and from nothing else (the prompt is fixed).
"""
from __future__ import annotations

import io
import random
from pathlib import Path

from generator.schema import COLUMN_NAMES, features

# category3, category2, shape, rgb, base price, weight (how common it is)
CATEGORIES = (
    ("QUILTED JACKETS", "OUTERWEAR", "square", (200, 40, 40), 1890.0, 4),
    ("TRENCH COATS", "OUTERWEAR", "triangle", (40, 160, 60), 2290.0, 2),
    ("SHOULDER BAGS", "BAGS", "circle", (40, 60, 200), 1450.0, 2),
    ("SCARVES", "ACCESSORIES", "stripe", (220, 180, 30), 490.0, 2),
    ("SNEAKERS", "SHOES", "cross", (150, 50, 170), 690.0, 1),
)
COLOURS = ("Honey", "Black", "Archive Beige", "Navy")
MATERIALS = ("Cotton", "Leather", "Wool")


def draw(shape: str, rgb: tuple[int, int, int], size: int, rng: random.Random):
    from PIL import Image, ImageDraw

    background = tuple(rng.randint(225, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(image)
    m = size // 6 + rng.randint(-2, 2)
    box = (m, m, size - m, size - m)
    if shape == "square":
        d.rectangle(box, fill=rgb)
    elif shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "triangle":
        d.polygon([(size // 2, m), (m, size - m), (size - m, size - m)], fill=rgb)
    elif shape == "stripe":
        for y in range(m, size - m, 6):
            d.rectangle((m, y, size - m, y + 2), fill=rgb)
    else:
        d.rectangle((size // 2 - 3, m, size // 2 + 3, size - m), fill=rgb)
        d.rectangle((m, size // 2 - 3, size - m, size // 2 + 3), fill=rgb)
    return image


def jpeg(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_rows(n: int, seed: int = 0, image_size: int = 48) -> list[dict]:
    rng = random.Random(seed)
    weights = [c[5] for c in CATEGORIES]
    rows = []
    for i in range(n):
        cat3, cat2, shape, rgb, base, _ = rng.choices(CATEGORIES, weights)[0]
        colour, material = rng.choice(COLOURS), rng.choice(MATERIALS)
        price = base + 100.0 * rng.randint(0, 4)
        rows.append({
            "website_name": "burberry.com", "competence_date": "2024-01-01", "country_code": "us",
            "currency_code": "USD", "brand": "BURBERRY", "category1_code": "WOMAN",
            "category2_code": cat2, "category3_code": cat3, "product_code": 80000000 + i,
            "title": f"{colour} {material} {cat3.title()[:-1]}", "itemurl": f"https://example.com/p/{i}",
            "imageurl": f"https://example.com/i/{i}.jpg", "full_price": price, "price": price,
            "full_price_eur": round(price * 0.92, 2), "price_eur": round(price * 0.92, 2), "flg_discount": 0,
            "image": {"bytes": jpeg(draw(shape, rgb, image_size, rng)), "path": None},
        })
    return rows


def make_dataset(n_train: int = 64, n_test: int = 16, seed: int = 0, image_size: int = 48):
    import datasets

    rows = make_rows(n_train + n_test, seed, image_size)
    def split(part):
        return datasets.Dataset.from_list(part, features=features())
    return datasets.DatasetDict({"train": split(rows[:n_train]), "test": split(rows[n_train:])})


def indexed_rows_and_tokenizer(n: int, seed: int, image_size: int = 48):
    """``n`` rows carrying their index (as the loader gives them) and a tokenizer trained on their text."""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import INDEX_KEY, answer_text, phi3_prompt
    from finetune.tokenizer import END, IMAGE, train_tokenizer

    rows = make_rows(n, seed=seed, image_size=image_size)
    for i, row in enumerate(rows):
        row[INDEX_KEY] = i
    texts = [phi3_prompt(DEFAULT_QUESTION, IMAGE) + answer_text(r) + END for r in rows]
    return rows, train_tokenizer(texts, vocab_size=512)


def write_parquet(dsd, out: Path) -> Path:
    """As ``gen-samples`` writes a dataset: ``OUT/data/{split}-00000-of-00001.parquet``."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, ds in dsd.items():
        assert tuple(ds.column_names) == COLUMN_NAMES
        ds.to_parquet(str(out / "data" / f"{name}-00000-of-00001.parquet"))
    return out


def dataset_dir(out: Path, n_train: int = 32, n_test: int = 8, seed: int = 0, image_size: int = 48,
                corrupt: tuple[int, ...] = (), drop_columns: tuple[str, ...] = ()) -> Path:
    """A gen-samples-shaped parquet folder; ``corrupt`` train rows get image bytes that are not an image."""
    import datasets

    rows = make_rows(n_train + n_test, seed, image_size)
    for i in corrupt:
        rows[i]["image"] = {"bytes": b"this is not a jpeg", "path": None}
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        ds = datasets.Dataset.from_list(part, features=features()).remove_columns(list(drop_columns))
        ds.to_parquet(str(out / "data" / f"{name}-00000-of-00001.parquet"))
    return out


def tiny_config(dataset: Path | str, out: Path | str, **overrides):
    """A ``FinetuneConfig`` for a seconds-long CPU run: tiny model, few steps, short eval, no W&B, and no
    vision warm-up (tiny's default 18 passes would be most of the run; tests/test_vision_warmup.py has it)."""
    from finetune.config import FinetuneConfig

    settings = dict(dataset=str(dataset), model="tiny", out=str(out), batch_size=8, max_steps=4, save_every=0,
                    num_workers=0, no_wandb=True, max_eval_samples=8, max_new_tokens=8, tokenizer_vocab_size=512,
                    log_every=1, vision_warmup_epochs=0)
    settings.update(overrides)
    return FinetuneConfig(**settings)


def text_only_model(out: Path) -> Path:
    """A local causal-LM folder with a tokenizer and no image processor (a model run-finetune must refuse)."""
    from transformers import Phi3Config, Phi3ForCausalLM

    from finetune.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["a text-only model"] * 4, vocab_size=300)
    config = Phi3Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    Phi3ForCausalLM(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def train_killed_after(config, step: int) -> None:
    """Run ``config`` and stop it after optimizer step ``step``, as Ctrl-C would (a KeyboardInterrupt)."""
    import pytest

    from finetune.train import train

    def kill(done: int) -> None:
        if done == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, on_step=kill)


def checkpoint_weights(out: Path, step: int) -> dict:
    """The trainable tensors a run in ``out`` saved at ``step``."""
    from safetensors.torch import load_file

    return load_file(str(out / "checkpoints" / f"step-{step:08d}" / "trainable.safetensors"))
