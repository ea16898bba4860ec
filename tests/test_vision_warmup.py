"""The vision warm-up (finetune/vision_warmup.py): before the fine-tune, a random model's vision side
learns to read what the training answers say; only the vision side moves; it is deterministic; a run
saves the warmed weights and a resumed run continues from them."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from rich.console import Console  # noqa: E402

import _ft_fixtures as fx  # noqa: E402

from finetune import vision_warmup  # noqa: E402
from finetune.builtins import build_builtin  # noqa: E402
from finetune.config import FinetuneConfig, FinetuneError  # noqa: E402
from finetune.models import under, vision_module_names  # noqa: E402
from finetune.train import train  # noqa: E402

QUIET = Console(quiet=True)


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def _tiny(n: int = 8):
    _, tokenizer = fx.indexed_rows_and_tokenizer(n, seed=0)
    return build_builtin("tiny", tokenizer, seed=0)


def test_targets_are_what_the_answers_say():
    split = fx.make_dataset(n_train=12, n_test=1)["train"]
    targets = vision_warmup.Targets.of(split)
    categories = sorted(set(split["category3_code"]))
    assert targets.categories == len(categories) >= 2
    assert [categories[i] for i in targets.category.tolist()] == split["category3_code"]
    assert targets.words.sum(dim=1).tolist() == [len(set(t.split())) for t in split["title"]]
    assert targets.log_price.tolist() == pytest.approx([math.log(p) for p in split["full_price"]])



def test_the_department_is_a_target_where_asked_and_the_data_has_several(tmp_path):
    """category1_code is not in the answer, but it sets the price (a kids' item costs about a third of an
    adult's) and the catalogue draws it as the product's size: the loader keeps the column and, with
    ``warmup_department``, the warm-up reads it with its own head (on the default catalogue, plain
    run-finetune's price MAPE 24.6 -> 21.8 %). Not asked, or one department, adds nothing."""
    from finetune.data import load_splits

    dsd = fx.make_dataset(n_train=24, n_test=4)
    departments = ["WOMAN", "MAN", "KIDS"]
    dsd = dsd.map(lambda row, i: {"category1_code": departments[i % 3]}, with_indices=True)
    split = load_splits(str(fx.write_parquet(dsd, tmp_path / "data")))["train"]
    assert "category1_code" in split.column_names
    assert vision_warmup.Targets.of(split).department is None   # off unless asked
    targets = vision_warmup.Targets.of(split, department=True)
    assert targets.departments == 3
    assert [sorted(departments)[i] for i in targets.department.tolist()] == split["category1_code"]
    loaded = _tiny()
    history = vision_warmup.warm_up(loaded.model, loaded.processor.image_processor, split,
                                    vision_warmup.WarmupConfig(epochs=2, batch_size=8, department=True),
                                    console=QUIET)
    assert all(set(h) == {"category", "words", "price", "department"} for h in history), history
    assert all(math.isfinite(h["department"]) for h in history)
    from finetune.cli import parse_config
    assert parse_config(["--warmup-department"]).warmup_department is True
    assert parse_config([]).warmup_department is False
    one = vision_warmup.Targets.of(fx.make_dataset(n_train=8, n_test=1)["train"], department=True)  # all WOMAN
    assert one.department is None and one.departments == 0

def test_warm_up_teaches_the_vision_side_alone_and_deterministically():
    split = fx.make_dataset(n_train=64, n_test=1)["train"]
    runs = []
    for _ in range(2):
        loaded = _tiny()
        before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
        rng = torch.get_rng_state()
        history = vision_warmup.warm_up(loaded.model, loaded.processor.image_processor, split,
                                        vision_warmup.WarmupConfig(epochs=12, batch_size=16), console=QUIET)
        assert torch.equal(torch.get_rng_state(), rng)    # the fine-tune's draws are the same with or without it
        runs.append((loaded, before, history))
    (loaded, before, history), (again, _, history_again) = runs
    assert len(history) == 12 and history == history_again
    # It learns: the category's loss falls far below where it started (log of the classes at chance).
    assert history[-1]["category"] < 0.4 * history[0]["category"], history
    vision = vision_module_names(loaded.model)
    after = loaded.model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(under(k, vision) for k in moved), sorted(moved)[:5]
    # The tower's own features are read: the projector is left for the fine-tune.
    assert any("vision_tower" in k for k in moved) and not any("multi_modal_projector" in k for k in moved)
    # Same seed, same weights; requires_grad as it was.
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in after.items())
    assert all(p.requires_grad for p in loaded.model.parameters())


def test_reading_the_projected_features_trains_the_projector_too():
    split = fx.make_dataset(n_train=16, n_test=1)["train"]
    loaded = _tiny()
    before = {k: v.clone() for k, v in vision_warmup.vision_state(loaded.model).items()}
    vision_warmup.warm_up(loaded.model, loaded.processor.image_processor, split,
                          vision_warmup.WarmupConfig(epochs=1, tower=False), console=QUIET)
    moved = {k for k, v in vision_warmup.vision_state(loaded.model).items() if not torch.equal(v, before[k])}
    assert any("vision_tower" in k for k in moved) and any("multi_modal_projector" in k for k in moved)


def test_a_frozen_vision_side_is_warmed_and_stays_frozen():
    split = fx.make_dataset(n_train=16, n_test=1)["train"]
    loaded = _tiny()
    vision = vision_module_names(loaded.model)
    for name, p in loaded.model.named_parameters():
        p.requires_grad_(not under(name, vision))
    tower = {k: v.clone() for k, v in vision_warmup.vision_state(loaded.model).items()}
    vision_warmup.warm_up(loaded.model, loaded.processor.image_processor, split,
                          vision_warmup.WarmupConfig(epochs=1), console=QUIET)
    assert any(not torch.equal(v, tower[k]) for k, v in vision_warmup.vision_state(loaded.model).items())
    assert [n for n, p in loaded.model.named_parameters() if p.requires_grad and under(n, vision)] == []


def test_a_run_saves_its_warm_up_and_a_resume_continues_from_it(tmp_path, monkeypatch):
    data = fx.dataset_dir(tmp_path / "data", n_train=24, n_test=4)
    settings = dict(vision_warmup_epochs=2, max_steps=4, save_every=2, save_final=False, max_eval_samples=4)
    straight = train(fx.tiny_config(data, tmp_path / "straight", **settings))
    assert (tmp_path / "straight" / vision_warmup.WEIGHTS).is_file()

    out = tmp_path / "killed"
    fx.train_killed_after(fx.tiny_config(data, out, **settings), 3)
    saved = (out / vision_warmup.WEIGHTS).read_bytes()
    assert saved == (tmp_path / "straight" / vision_warmup.WEIGHTS).read_bytes()   # same seed, same bytes

    def no_second_warm_up(*args, **kwargs):
        raise AssertionError("a resumed run warmed up again instead of loading its warmed weights")

    monkeypatch.setattr(vision_warmup, "warm_up", no_second_warm_up)
    resumed = train(fx.tiny_config(data, out, resume=True, **settings))
    assert resumed.resumed_from == 2
    # The warm-up's time is reported beside the loop's; the resumed run spent none on it.
    assert straight.metrics["train"]["vision_warmup_seconds"] > 0 == resumed.metrics["train"]["vision_warmup_seconds"]
    expected, got = fx.checkpoint_weights(tmp_path / "straight", 4), fx.checkpoint_weights(out, 4)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)
    with pytest.raises(FinetuneError, match=r"vision_warmup_epochs=2.0 \(now 3.0\)"):
        train(fx.tiny_config(data, out, resume=True, **{**settings, "vision_warmup_epochs": 3}))


def test_no_warm_up_writes_nothing(tmp_path):
    data = fx.dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    train(fx.tiny_config(data, tmp_path / "run", vision_warmup_epochs=0, max_steps=1, save_final=False,
                         max_eval_samples=2))
    assert not (tmp_path / "run" / vision_warmup.WEIGHTS).exists()


def test_defaults_and_bad_values(tmp_path):
    assert FinetuneConfig(dataset=str(tmp_path), model="tiny").validate().vision_warmup_epochs == 36
    assert FinetuneConfig(dataset=str(tmp_path), model="tiny-llava").validate().vision_warmup_epochs == 0
    assert FinetuneConfig(dataset=str(tmp_path), model=str(tmp_path)).validate().vision_warmup_epochs == 0
    with pytest.raises(FinetuneError, match="--vision-warmup-epochs must be"):
        FinetuneConfig(dataset=str(tmp_path), model="tiny", vision_warmup_epochs=-1.0).validate()


@pytest.mark.parametrize("twin", ["tiny-qwen2.5-vl", "tiny-smolvlm"])
def test_processors_with_more_than_pixels_warm_up_too(twin):
    # Qwen2.5-VL gives flat patches with image_grid_thw, Idefics3 crops with pixel_attention_mask: each
    # picture is processed alone, and a batch is their outputs joined as the processor would join them.
    from finetune.builtins import special_tokens
    from finetune.data import answer_text
    from finetune.tokenizer import train_tokenizer

    split = fx.make_dataset(n_train=16, n_test=1)["train"]
    tokenizer = train_tokenizer([answer_text(r) for r in split], vocab_size=400,
                                extra_special_tokens=special_tokens(twin))
    loaded = build_builtin(twin, tokenizer, seed=0)
    pictures = vision_warmup.Pictures(split, loaded.processor.image_processor, mirror=True)
    assert not pictures.fixed
    rows, mirrored = torch.tensor([0, 1, 2]), torch.tensor([False, True, False])
    images = [fx_image(split, 0), fx_image(split, 1, mirror=True), fx_image(split, 2)]
    if twin == "tiny-smolvlm":   # Idefics3 takes a list of pictures a sample; one picture a sample here
        images = [[image] for image in images]
    together = loaded.processor.image_processor(images=images, return_tensors="pt")
    batch = pictures.batch(rows, mirrored, torch.device("cpu"), torch.float32)
    assert all(torch.equal(batch[k], together[k].to(batch[k].dtype)) for k in batch), list(batch)
    before = {k: v.clone() for k, v in vision_warmup.vision_state(loaded.model).items()}
    history = vision_warmup.warm_up(loaded.model, loaded.processor.image_processor, split,
                                    vision_warmup.WarmupConfig(epochs=2, batch_size=8), console=QUIET)
    assert len(history) == 2 and all(math.isfinite(v) for v in history[-1].values())
    assert any(not torch.equal(v, before[k]) for k, v in vision_warmup.vision_state(loaded.model).items())


def fx_image(split, row: int, mirror: bool = False):
    from PIL import Image

    from finetune.data import IMAGE_COLUMN, decode_image

    image = decode_image(split[row][IMAGE_COLUMN])
    return image.transpose(Image.FLIP_LEFT_RIGHT) if mirror else image


def test_a_new_run_does_not_read_a_warm_up_it_finds(tmp_path):
    # A run stopped before its first checkpoint leaves its warm-up behind; a new run in that folder, with
    # another seed, warms up for itself.
    data = fx.dataset_dir(tmp_path / "data", n_train=8, n_test=2)
    settings = dict(vision_warmup_epochs=1, max_steps=1, save_final=False, max_eval_samples=2, save_every=0)
    train(fx.tiny_config(data, tmp_path / "a", seed=1, **settings))
    left = (tmp_path / "a" / vision_warmup.WEIGHTS).read_bytes()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / vision_warmup.WEIGHTS).write_bytes(left)
    train(fx.tiny_config(data, tmp_path / "b", seed=2, **settings))
    assert (tmp_path / "b" / vision_warmup.WEIGHTS).read_bytes() != left


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pictures_kept_on_the_gpu_give_the_host_batches():
    # On a GPU the fixed-size pictures move to the device once, so a step's gather and mirror run there
    # (run 0011: with the pictures on the host and four runs sharing its cores, a warm-up step took 0.12 s;
    # bench/gpu/warmup_speed.py times the two).
    from finetune.tokenizer import train_tokenizer

    split = fx.make_dataset(n_train=16, n_test=1)["train"]
    loaded = build_builtin("tiny", train_tokenizer(["a stand-in text"], vocab_size=300), seed=0)
    host = vision_warmup.Pictures(split, loaded.processor.image_processor, mirror=True)
    cuda = torch.device("cuda")
    kept = vision_warmup.Pictures(split, loaded.processor.image_processor, mirror=True).to(cuda)
    assert kept.tensor.device.type == "cuda" and host.tensor.device.type == "cpu"
    rows, mirrored = torch.tensor([3, 0, 3, 15]), torch.tensor([False, True, True, False])
    for dtype in (torch.float32, torch.bfloat16):
        want = host.batch(rows, mirrored, torch.device("cpu"), dtype)["pixel_values"]
        got = kept.batch(rows, mirrored, cuda, dtype)["pixel_values"]
        assert got.device.type == "cuda" and got.dtype == dtype and torch.equal(got.cpu(), want)
