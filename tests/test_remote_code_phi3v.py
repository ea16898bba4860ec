"""Phi-3 / Phi-3.5-vision through remote code: ``run-finetune --model PATH --trust-remote-code``.

The product's original recipe fine-tunes microsoft/Phi-3-vision-128k-instruct, a model that runs its own
code from its repository. That code is not available offline, and it is not copied here: the model
folder these tests use is a **stand-in written by the test** (tests/phi3v_remote_code/, copied into the
folder beside a tiny random-weight checkpoint and a tokenizer trained here). It has Phi-3-vision's
remote-code interface, not Microsoft's code:

* config.json with ``model_type`` "phi3_v" (unknown to transformers) and an ``auto_map`` sending
  AutoConfig, AutoModelForCausalLM, AutoProcessor and AutoImageProcessor to the folder's own
  ``configuration_phi3_v.py``, ``modeling_phi3_v.py``, ``processing_phi3_v.py`` and
  ``image_processing_phi3_v.py``;
* a processor that takes one prompt string whose ``<|image_1|>`` tag becomes negative placeholder ids
  (-1, one per image token), and gives ``pixel_values`` ``[images, 1 + crops, 3, S, S]`` with
  ``image_sizes``;
* ``Phi3VForCausalLM`` whose forward takes ``input_ids, attention_mask, pixel_values, image_sizes,
  labels`` (no ``**kwargs``), clamps ``input_ids`` in place, computes its own mean loss, and whose
  image embedding (a CLIP tower, 2x2-merged crop features with learnt separators, an MLP projector)
  shares its token embedding with the decoder.

Built on transformers' Phi-3 decoder layers and CLIP vision model, at tiny sizes (hidden 32, 28 px crops,
up to 4 crops), so the module runs in about half a minute on two CPU cores.

What the kit needed for this interface, each guarded here: the plain loss calls a forward without
``num_items_in_batch`` (finetune/loss.py ``plain_loss``); the loss hands the model a copy of ``input_ids``,
which the model clamps in place (``forward_inputs``); a processor that skipped ``ProcessorMixin.__init__``
gets its ``chat_template`` so that the final model and the export can save it (finetune/models.py
``_complete_processor``); under LoRA with --train-vision the trained copy of the image embedding keeps
the decoder's token embedding shared (``reshare_modules_to_save``).
"""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from _ft_fixtures import jpeg, make_rows, tiny_config  # noqa: E402
from test_families import _losses, _moved  # noqa: E402

from finetune import cli  # noqa: E402
from finetune.data import answer_text  # noqa: E402
from finetune.tokenizer import END  # noqa: E402

SOURCES = Path(__file__).with_name("phi3v_remote_code")
HIDDEN = 32
CROP, PATCH, MAX_CROPS = 28, 7, 4
IMAGE_TOKENS = (CROP // PATCH // 2) ** 2   # a crop's tokens: its patches merged 2x2 (Phi-3-vision: 144)
AUTO_MAP = {
    "AutoConfig": "configuration_phi3_v.Phi3VConfig",
    "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
    "AutoProcessor": "processing_phi3_v.Phi3VProcessor",
    "AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor",
}
# Phi-3's chat and control tokens; <|image_1|> is not one: the processor splits the prompt at it.
SPECIAL = ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", END, "<|image|>")


def phi3v_tokenizer():
    """A byte-level BPE trained on the catalogue's text with Phi-3's special tokens; like Phi-3-vision's,
    it adds ``<s>`` to what it encodes and pads and ends text with ``<|endoftext|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=2, special_tokens=list(SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([f"What is shown in this image? {answer_text(r)}" for r in make_rows(64)], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<unk>",
        extra_special_tokens=list(SPECIAL[4:]), padding_side="right", add_bos_token=True, add_eos_token=False,
        clean_up_tokenization_spaces=False)


def build_phi3v(out: Path) -> Path:
    """The stand-in's folder: its code, config.json (auto_map), preprocessor_config.json, the tokenizer
    and seeded random weights, saved by the model class the folder's own code defines."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out.mkdir(parents=True)
    for source in SOURCES.glob("*.py"):
        shutil.copy(source, out / source.name)
    tokenizer = phi3v_tokenizer()
    tokenizer.save_pretrained(str(out))
    clip = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                image_size=CROP, patch_size=PATCH, hidden_act="quick_gelu", projection_dim=HIDDEN)
    (out / "config.json").write_text(json.dumps({
        "model_type": "phi3_v", "architectures": ["Phi3VForCausalLM"], "auto_map": AUTO_MAP,
        "vocab_size": len(tokenizer), "hidden_size": HIDDEN, "intermediate_size": 2 * HIDDEN, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "original_max_position_embeddings": 512, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
                       "use_hd_transform": True, "with_learnable_separator": True},
        "img_processor": {"name": "clip_vision_model", "image_dim_out": HIDDEN, "num_img_tokens": IMAGE_TOKENS,
                          "layer_idx": -2, "type_feature": "patch", "clip": clip},
    }, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {k: AUTO_MAP[k] for k in ("AutoProcessor", "AutoImageProcessor")},
        "image_processor_type": "Phi3VImageProcessor", "processor_class": "Phi3VProcessor", "num_crops": MAX_CROPS,
        "num_img_tokens": IMAGE_TOKENS, "crop_size": CROP,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    }, indent=2))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(out), trust_remote_code=True),
                                             trust_remote_code=True)
    # The real separators start at zero; random ones make every row of crops read differently here.
    with torch.no_grad():
        for separator in (model.model.vision_embed_tokens.glb_GN, model.model.vision_embed_tokens.sub_GN):
            separator.normal_(std=0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END)]
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def modules_cache(tmp_path_factory):
    """transformers copies a model's own code into its modules cache and imports it from there: a
    folder of this module's, never the user's ~/.cache/huggingface/modules."""
    import transformers.dynamic_module_utils as dynamic

    cache = tmp_path_factory.mktemp("hf-modules")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dynamic, "HF_MODULES_CACHE", str(cache))
        mp.syspath_prepend(str(cache))
        # A package of that name imported from another cache would shadow this one's.
        mp.delitem(sys.modules, "transformers_modules", raising=False)
        yield cache


@pytest.fixture(scope="module")
def phi3v(tmp_path_factory, modules_cache) -> Path:
    return build_phi3v(tmp_path_factory.mktemp("phi3v") / "phi3v-stand-in")


# Square, landscape and portrait pictures: 2x2, 1x2 and 2x1 crops (27, 17 and 19 image tokens), so
# batches mix crop counts (zero crops pad pixel_values) and prompt lengths (padding around the prompt).
SHAPES = ((48, 48), (64, 32), (32, 64))


def crops_dataset(out: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """A gen-samples-shaped parquet folder whose pictures cycle through ``SHAPES``."""
    import io

    import datasets
    from PIL import Image

    from generator.schema import features

    rows = make_rows(n_train + n_test, seed=1, image_size=48)
    for i, row in enumerate(rows):
        picture = Image.open(io.BytesIO(row["image"]["bytes"])).resize(SHAPES[i % len(SHAPES)])
        row["image"] = {"bytes": jpeg(picture), "path": None}
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        part_file = out / "data" / f"{name}-00000-of-00001.parquet"
        datasets.Dataset.from_list(part, features=features()).to_parquet(str(part_file))
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return crops_dataset(tmp_path_factory.mktemp("phi3v-data") / "data")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Datasets' cache and W&B's files go to the test's folder, never the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


def _batch(loaded, data: Path, rows=(0, 1, 2, 3)) -> dict:
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import Collator, RowsDataset, build_prompt, load_splits
    from finetune.loss import with_host_indices

    collator = Collator(loaded.processor, build_prompt(loaded, DEFAULT_QUESTION), loaded.end_token)
    return with_host_indices(collator(RowsDataset(load_splits(str(data))["train"]).__getitems__(list(rows))))


def test_the_stand_in_has_phi3_visions_interface(phi3v, data):
    """What the kit meets: the model's own classes by auto_map, negative image ids, 5-D pixels."""
    from finetune.models import _needs_remote, load_pretrained

    raw = json.loads((phi3v / "config.json").read_text())
    assert _needs_remote(raw) and set(AUTO_MAP) <= set(raw["auto_map"])
    loaded = load_pretrained(str(phi3v), trust_remote_code=True)
    assert type(loaded.model).__name__ == "Phi3VForCausalLM" and type(loaded.processor).__name__ == "Phi3VProcessor"
    assert type(loaded.model).__module__.startswith("transformers_modules.")   # the folder's own code
    assert loaded.phi3_chat and loaded.image_token == "<|image_1|>" and loaded.end_token == END
    batch = _batch(loaded, data)
    ids = batch["input_ids"]
    assert set(ids[ids < 0].tolist()) == {-1}                     # <|image_1|>'s placeholder id
    assert sorted((ids < 0).sum(1).tolist()) == [17, 19, 27, 27]    # one id per image token, by crop grid
    assert batch["pixel_values"].shape == (4, MAX_CROPS + 1, 3, CROP, CROP)
    assert sorted(map(tuple, batch["image_sizes"].tolist())) == [(28, 56), (56, 28), (56, 56), (56, 56)]


def test_answer_loss_equals_the_models_own_loss_and_sees_the_image(phi3v, data):
    """On one batch: the answer-only loss (the backbone's hidden states, logits at the answer only) equals
    the model's own loss (its own forward and mean cross-entropy), each as often as it is computed; and
    grey pixels instead of the images change it."""
    from finetune.loss import compute_loss, supports_answer_loss
    from finetune.models import load_pretrained

    model = load_pretrained(str(phi3v), trust_remote_code=True).model.eval()
    batch = _batch(load_pretrained(str(phi3v), trust_remote_code=True), data)
    assert supports_answer_loss(model)
    with torch.no_grad():
        answer = compute_loss(model, batch, kind="answer").loss
        plain = compute_loss(model, batch, kind="plain").loss
        again = compute_loss(model, batch, kind="answer").loss
        blank = compute_loss(model, {**batch, "pixel_values": torch.full_like(batch["pixel_values"], 0.5)}).loss
    assert torch.isfinite(answer) and abs(float(answer) - float(plain)) < 1e-4, (float(answer), float(plain))
    assert float(again) == float(answer)
    assert abs(float(answer) - float(blank)) > 1e-6   # the image reaches the decoder


@pytest.mark.parametrize("method", ["lora", "full"])
def test_trains_evaluates_saves_and_reloads(method, phi3v, data, tmp_path, capfd):
    """Two steps with --trust-remote-code (LoRA on the decoder under the fast preset, whose levers that
    cannot apply say so; or everything but the tower in full), a generation eval whose answers are parsed
    and scored, and the final model, which reloads and writes the run's answers again: the base with the
    adapter, and the merged export (LoRA); final/ with the model's code saved beside it (full)."""
    from finetune.export import export_run
    from finetune.models import load_pretrained
    from finetune.train import train

    out = tmp_path / "run"
    train(tiny_config(data, out, model=str(phi3v), trust_remote_code=True, method=method, batch_size=4, max_steps=2,
                      lr=1e-3, max_eval_samples=4, max_new_tokens=4, preset="fast" if method == "lora" else "none"))
    said = " ".join(capfd.readouterr().err.split())   # rich wraps long lines
    losses = _losses(out)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses) and losses[0] != losses[1], losses
    assert _moved(out, method, phi3v)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_generated"] == 4 and set(metrics["model"]) >= {"parse_rate", "category3_accuracy"}, metrics
    predictions = [json.loads(line)["prediction"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(isinstance(p, str) for p in predictions), predictions

    final = out / "final"
    if method == "lora":
        from peft import PeftModel

        for lever in ("maskless off", "image feature cache off", "answer_only_last_mlp off"):
            assert lever in said, said
        loaded = load_pretrained(str(phi3v), trust_remote_code=True)
        adapted = PeftModel.from_pretrained(loaded.model, str(final / "adapter"))
        assert _predictions(adapted, loaded, data) == predictions
        merged = load_pretrained(str(export_run(out, dtype="float32").out), trust_remote_code=True)
        assert _predictions(merged.model, merged, data) == predictions
    else:
        assert (final / "modeling_phi3_v.py").is_file() and (final / "processing_phi3_v.py").is_file()
        reloaded = load_pretrained(str(final), trust_remote_code=True)
        assert type(reloaded.processor).__name__ == "Phi3VProcessor"
        assert _predictions(reloaded.model, reloaded, data) == predictions


def test_lora_training_the_vision_side_keeps_one_token_embedding(phi3v, data, tmp_path):
    """LoRA with --train-vision: the image embedding (``vision_embed_tokens``: tower, separators, projector)
    trains in full, but the decoder's token embedding it holds as ``wte`` stays the one, frozen embedding,
    which the prompt's tokens and every generated token go through alike."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from finetune.models import load_pretrained
    from finetune.train import train

    out = tmp_path / "run"
    train(tiny_config(data, out, model=str(phi3v), trust_remote_code=True, method="lora", train_vision=True,
                      batch_size=4, max_steps=2, lr=1e-2, max_eval_samples=4, max_new_tokens=4))
    base = load_file(str(phi3v / "model.safetensors"))
    adapter = load_file(str(out / "final" / "adapter" / "adapter_model.safetensors"))

    def trained(part: str) -> dict:
        """The adapter's copy of ``vision_embed_tokens.<part>...``, by its name under vision_embed_tokens."""
        return {k.split("vision_embed_tokens.", 1)[1]: v for k, v in adapter.items()
                if f"vision_embed_tokens.{part}" in k}

    assert any(not torch.equal(v, base[f"model.vision_embed_tokens.{k}"]) for k, v in trained("img_processor").items())
    assert any(not torch.equal(v, base[f"model.vision_embed_tokens.{k}"]) for k, v in trained("img_projection").items())
    assert not torch.equal(trained("sub_GN")["sub_GN"], base["model.vision_embed_tokens.sub_GN"])
    for embedding in trained("wte").values():
        assert torch.equal(embedding, base["model.embed_tokens.weight"])
    predictions = [json.loads(line)["prediction"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    loaded = load_pretrained(str(phi3v), trust_remote_code=True)
    adapted = PeftModel.from_pretrained(loaded.model, str(out / "final" / "adapter"))
    assert _predictions(adapted, loaded, data) == predictions


def _test_rows(data: Path, n: int = 4):
    from finetune.data import load_splits

    return load_splits(str(data))["test"].select(range(n))


def _predictions(model, loaded, data: Path, n: int = 4, new_tokens: int = 4) -> list[str]:
    """The kit's evaluation generation (batched, prompts left-padded) on the first ``n`` test rows."""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import build_prompt
    from finetune.evaluate import generate_texts

    texts = generate_texts(model, loaded, _test_rows(data, n), build_prompt(loaded, DEFAULT_QUESTION),
                           batch_size=n, max_new_tokens=new_tokens, device=torch.device("cpu"))
    return [texts[i] for i in range(n)]


def test_batched_generation_is_greedy_decoding_row_by_row(phi3v, data):
    """The evaluation's generation (a batch of prompts of three lengths, left-padded, the model's own
    ``generate`` with its cache) writes what plain greedy decoding of each row alone writes: the model's
    full forward on the prompt and the tokens so far, no cache, no padding, the next token its argmax."""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import IMAGE_COLUMN, build_prompt, decode_image
    from finetune.models import load_pretrained

    loaded = load_pretrained(str(phi3v), trust_remote_code=True)
    model, tokenizer, prompt = loaded.model.eval(), loaded.tokenizer, build_prompt(loaded, DEFAULT_QUESTION)
    batched = _predictions(model, loaded, data, new_tokens=6)
    alone = []
    for row in _test_rows(data):
        inputs = loaded.processor(text=prompt, images=[decode_image(row[IMAGE_COLUMN])], return_tensors="pt")
        ids, new = inputs["input_ids"], []
        with torch.no_grad():
            for _ in range(6):
                logits = model(input_ids=torch.cat([ids, torch.tensor([new], dtype=torch.long)], 1).clone(),
                               pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"],
                               use_cache=False).logits
                new.append(int(logits[0, -1].argmax()))
                if new[-1] == loaded.end_token_id:
                    break
        alone.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert batched == alone


def test_without_trust_remote_code_the_run_is_refused_in_one_line(phi3v, data, tmp_path, capsys, modules_cache):
    """No --trust-remote-code: one line saying why and what to add, exit 2, no run folder, and none of
    the model's code copied or run."""
    model = shutil.copytree(phi3v, tmp_path / "refused-stand-in")   # its code would land in a folder of its name
    before = sorted(p.name for p in modules_cache.rglob("*"))
    capsys.readouterr()
    try:
        code = cli.main(["--dataset", str(data), "--model", str(model), "--out", str(tmp_path / "run"),
                         "--max-steps", "1", "--num-workers", "0", "--no-wandb"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("run-finetune:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "runs its own code" in lines[0] and "--trust-remote-code" in lines[0], lines[0]
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in modules_cache.rglob("*")) == before
