"""Every model family through ``run-finetune``'s Python API: tiny random models of the real transformers
classes, saved with their real processors (tokenizers trained here), train with LoRA and in full,
evaluate by generation and save; the answer-only loss equals the model's own loss on the answer.

Each family is built once per module (module-scoped fixtures) at tiny sizes (hidden 32, one or two
layers, images of 28-56 px), so the whole file runs in a couple of minutes on two cores. The dataset
mixes two image sizes, so dynamic-resolution families (Qwen2-VL, LLaVA-NeXT) meet batches whose
images have different token counts.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from _ft_fixtures import make_rows, tiny_config

torch = pytest.importorskip("torch")

from finetune.families.qwen2_vl import image_only_class  # noqa: E402
from finetune.tokenizer import BOS, END, PAD, UNK, train_tokenizer  # noqa: E402

# The families' chat templates, shortened, as the built-in twins have them. Gemma 3's writes <bos> itself,
# and its tokenizer adds one too (as the real ones do).
from finetune.twins import GEMMA3_TEMPLATE, QWEN_TEMPLATE  # noqa: E402

HIDDEN = 32

LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m.role | upper }}: {% for c in m.content %}{% if c.type == 'image' %}<image>\n"
    "{% else %}{{ c.text }}{% endif %}{% endfor %}\n{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def family_tokenizer(named: dict[str, str], extra: tuple[str, ...] = (), *, add_bos: bool = False):
    """A byte-level BPE trained on the catalogue's text, plus a family's special tokens: ``named`` ones
    become attributes (``tokenizer.image_token``, ``.image_token_id``), as real processors expect."""
    from transformers import PreTrainedTokenizerFast

    from _ft_fixtures import make_rows as rows_of
    from finetune.data import answer_text

    base = train_tokenizer([f"Describe the product. {answer_text(r)}" for r in rows_of(64)], vocab_size=400)
    backend = base.backend_tokenizer
    backend.add_special_tokens([*named.values(), *extra])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=END, pad_token=PAD, unk_token=UNK,
        extra_special_tokens=dict(named), padding_side="right", add_bos_token=add_bos, add_eos_token=False,
        clean_up_tokenization_spaces=False)


def _text(tokenizer, **kw) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **kw)


def _clip_vision(image_size: int, patch: int) -> dict:
    return dict(model_type="clip_vision_model", hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=patch,
                projection_dim=HIDDEN)


def _siglip_vision(image_size: int, patch: int) -> dict:
    return dict(model_type="siglip_vision_model", hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                num_hidden_layers=1, num_attention_heads=2, image_size=image_size, patch_size=patch)


def _save(model, processor, tokenizer, out: Path) -> Path:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(END)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out


def build_qwen(out: Path, version: str) -> Path:
    """Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``): flat patches, image_grid_thw, M-RoPE."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
                                 ("<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"))
    ids = {f"{k}_token_id": tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("image", "<|image_pad|>"), ("video", "<|video_pad|>"), ("vision_start", "<|vision_start|>"),
        ("vision_end", "<|vision_end|>"))}
    # head_dim 16: M-RoPE's sections add up to half of it.
    text = _text(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "mrope_section": [4, 2, 2]})
    vision = dict(depth=2, hidden_size=HIDDEN, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    if version == "2.5":
        vision.update(intermediate_size=2 * HIDDEN, out_hidden_size=HIDDEN, window_size=56, fullatt_block_indexes=[1])
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        model_class, processor_class = tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLProcessor
    else:
        vision.update(embed_dim=HIDDEN, mlp_ratio=2)
        config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model_class, processor_class = tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLProcessor
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = model_class(config)
    images = tf.Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                         temporal_patch_size=2)
    # Without its video processor, which needs torchvision (as run-finetune loads it where that is missing).
    processor = image_only_class(processor_class)(image_processor=images, tokenizer=tokenizer,
                                                  chat_template=QWEN_TEMPLATE)
    return _save(model, processor, tokenizer, out)


def build_gemma3(out: Path) -> Path:
    """Gemma 3: SigLIP tower, pooled projector, token_type_ids (bidirectional attention on the image)."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                                  "eoi_token": "<end_of_image>"}, ("<start_of_turn>", "<end_of_turn>"), add_bos=True)
    text = _text(tokenizer, head_dim=16, query_pre_attn_scalar=16, sliding_window=16, layer_types=[
        "sliding_attention", "full_attention"])
    config = tf.Gemma3Config(
        text_config=text, vision_config=_siglip_vision(28, 7), mm_tokens_per_image=4,
        image_token_index=tokenizer.image_token_id, boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id)
    torch.manual_seed(0)
    model = tf.Gemma3ForConditionalGeneration(config)
    # Gemma 3 initialises its projection to zeros: every image would then read the same to the decoder.
    torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
    images = tf.Gemma3ImageProcessorPil(size={"height": 28, "width": 28})
    processor = tf.Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=4,
                                   chat_template=GEMMA3_TEMPLATE)
    return _save(model, processor, tokenizer, out)


def build_paligemma(out: Path) -> Path:
    """PaliGemma: SigLIP tower, linear projector, Gemma decoder; a prefix attended bidirectionally."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<image>"})
    images = tf.SiglipImageProcessorPil(size={"height": 28, "width": 28})
    images.image_seq_length = (28 // 7) ** 2   # the processor reads it from here, as from a saved one
    processor = tf.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)  # adds its extra tokens
    config = tf.PaliGemmaConfig(
        text_config=dict(_text(tokenizer, head_dim=16), model_type="gemma", vocab_size=len(tokenizer),
                         num_image_tokens=images.image_seq_length),
        vision_config=dict(_siglip_vision(28, 7), projection_dim=HIDDEN), projection_dim=HIDDEN,
        hidden_size=HIDDEN, image_token_index=tokenizer.image_token_id)
    torch.manual_seed(0)
    model = tf.PaliGemmaForConditionalGeneration(config)
    return _save(model, processor, tokenizer, out)


def build_llava_next(out: Path) -> Path:
    """LLaVA-NeXT: anyres crops (5-D pixel_values), image_sizes, an image_newline per row of crops."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<image>"})
    config = tf.LlavaNextConfig(
        text_config=dict(_text(tokenizer), model_type="llama"), vision_config=_clip_vision(28, 14),
        image_token_index=tokenizer.image_token_id, image_grid_pinpoints=[[28, 28], [28, 56], [56, 28], [56, 56]],
        vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=4)
    torch.manual_seed(0)
    model = tf.LlavaNextForConditionalGeneration(config)
    images = tf.LlavaNextImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
        image_grid_pinpoints=[[28, 28], [28, 56], [56, 28], [56, 56]])
    processor = tf.LlavaNextProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                                      vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                      chat_template=LLAVA_TEMPLATE)
    return _save(model, processor, tokenizer, out)


def build_llava(out: Path) -> Path:
    """Plain LLaVA (CLIP tower, MLP projector, Llama decoder): the family the loss's shortcut serves."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<image>"})
    config = tf.LlavaConfig(
        text_config=dict(_text(tokenizer), model_type="llama"), vision_config=_clip_vision(28, 14),
        image_token_index=tokenizer.image_token_id, vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_seq_length=4)
    torch.manual_seed(0)
    model = tf.LlavaForConditionalGeneration(config)
    images = tf.CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = tf.LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14,
                                  vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                  chat_template=LLAVA_TEMPLATE)
    return _save(model, processor, tokenizer, out)


def build_idefics3(out: Path) -> Path:
    """Idefics3 (SmolVLM's class too): SigLIP tower, pixel-shuffle connector, image splitting."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<image>"}, (
        "<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
        *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))))
    config = tf.Idefics3Config(
        text_config=dict(_text(tokenizer), model_type="llama"),
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=7),
        scale_factor=2, image_token_id=tokenizer.image_token_id)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = tf.Idefics3ForConditionalGeneration(config)
    # Splitting on: a 64 px image becomes four 28 px crops and the whole, a 40 px one the whole alone.
    images = tf.Idefics3ImageProcessorPil(size={"longest_edge": 56}, max_image_size={"longest_edge": 28},
                                          do_image_splitting=True)
    processor = tf.Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=4,
                                     chat_template=LLAVA_TEMPLATE)
    return _save(model, processor, tokenizer, out)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2.5-vl": lambda out: build_qwen(out, "2.5"),
    "qwen2-vl": lambda out: build_qwen(out, "2"),
    "gemma3": build_gemma3,
    "paligemma": build_paligemma,
    "llava-next": build_llava_next,
    "llava": build_llava,
    "idefics3": build_idefics3,
}


def mixed_dataset(out: Path, n_train: int = 8, n_test: int = 4) -> Path:
    """A gen-samples-shaped parquet folder whose images alternate between 40 and 64 px."""
    import datasets

    from generator.schema import features

    small, large = make_rows(n_train + n_test, seed=1, image_size=40), make_rows(n_train + n_test, seed=2,
                                                                                 image_size=64)
    rows = [small[i] if i % 2 else large[i] for i in range(n_train + n_test)]
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        datasets.Dataset.from_list(part, features=features()).to_parquet(str(out / "data" / f"{name}-00000-of-00001.parquet"))
    return out


FAMILIES = tuple(BUILDERS)
# Families that turn the fast preset's maskless lever off (the mask carries their positions or their
# bidirectional attention; Idefics3 is not known to the kit, so nothing is assumed), each in one line.
MASKLESS_OFF = {"qwen2.5-vl", "qwen2-vl", "gemma3", "paligemma", "idefics3"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return mixed_dataset(tmp_path_factory.mktemp("families") / "data")


def built_models(builders: dict[str, Callable[[Path], Path]]):
    """The ``built`` fixture over ``builders``: a family's tiny model folder, built once for the module
    (tests/test_families_more.py makes its own from its builders)."""

    @pytest.fixture(scope="module")
    def built(tmp_path_factory) -> Callable[[str], Path]:
        root, done = tmp_path_factory.mktemp("models"), {}

        def get(family: str) -> Path:
            if family not in done:
                done[family] = builders[family](root / family)
            return done[family]

        return get

    return built


built = built_models(BUILDERS)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Datasets' cache goes to the test's folder, never the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def _losses(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [line["train/loss"] for line in lines if "train/loss" in line]


def _moved(out: Path, method: str, base: Path) -> bool:
    """Whether training changed the weights it saved: a LoRA B (zero at the start) or a full weight."""
    from safetensors.torch import load_file

    if method == "lora":
        adapter = load_file(str(out / "final" / "adapter" / "adapter_model.safetensors"))
        return any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    before, after = load_file(str(base / "model.safetensors")), load_file(str(out / "final" / "model.safetensors"))
    return any(not torch.equal(before[k], after[k]) for k in before.keys() & after.keys())


def train_two_steps(model_dir: Path, data: Path, out: Path, method: str, capfd) -> str:
    """Two steps (LoRA under the fast preset, whose levers turn themselves off where they cannot apply;
    full without), a generation eval and the saved model, through the Python API; what the run said
    (tests/test_families_more.py trains its families so too)."""
    from finetune.train import train

    preset = "fast" if method == "lora" else "none"
    train(tiny_config(data, out, model=str(model_dir), method=method, batch_size=4, max_steps=2, lr=1e-3,
                      max_eval_samples=2, max_new_tokens=4, preset=preset))
    losses = _losses(out)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses) and losses[0] != losses[1], losses
    assert _moved(out, method, model_dir)
    assert "parse_rate" in json.loads((out / "metrics.json").read_text())["model"]
    assert (out / "final" / ("adapter" if method == "lora" else "model.safetensors")).exists()
    return " ".join(capfd.readouterr().err.split())   # rich wraps long lines


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_evaluates_and_saves(family, method, data, built, tmp_path, capfd):
    said = train_two_steps(built(family), data, tmp_path / "run", method, capfd)
    if method == "lora":   # the fast preset: each lever that cannot apply says so
        assert said.count("maskless off") == (family in MASKLESS_OFF), said
        assert said.count("image feature cache off") == (family != "llava"), said
        assert "answer_only_last_mlp off" not in said


def check_answer_loss(model_dir: Path, data: Path, *, maskless: bool, pixels: str = "pixel_values") -> None:
    """On one batch, the answer-only loss (logits at the answer positions, the family's own forward)
    equals the model's own loss with labels on the answer; the image changes it; and, where the maskless
    lever stays on, dropping the mask keeps it (tests/test_families_more.py checks its families so too)."""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import Collator, RowsDataset, build_prompt, load_splits
    from finetune.loss import compute_loss, supports_answer_loss, with_host_indices
    from finetune.models import load_pretrained
    from finetune.speed import drop_causal_mask

    loaded = load_pretrained(str(model_dir))
    model = loaded.model.eval()   # no dropout: both losses see the same forward
    collator = Collator(loaded.processor, build_prompt(loaded, DEFAULT_QUESTION), loaded.end_token)
    batch = with_host_indices(collator(RowsDataset(load_splits(str(data))["train"]).__getitems__([0, 1, 2, 3])))
    assert supports_answer_loss(model)
    with torch.no_grad():
        answer = compute_loss(model, batch, kind="answer").loss
        plain = compute_loss(model, batch, kind="plain").loss
        # Grey, not black: Idefics3 takes an all-zero image for padding and drops it.
        blank = compute_loss(model, {**batch, pixels: torch.full_like(batch[pixels], 0.5)}).loss
        unmasked = compute_loss(model, drop_causal_mask(batch, True)).loss if maskless else answer
    assert torch.isfinite(answer) and abs(float(answer) - float(plain)) < 1e-4, (float(answer), float(plain))
    assert abs(float(answer) - float(blank)) > 1e-6   # the image reaches the decoder
    assert abs(float(unmasked) - float(answer)) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_loss_equals_the_models_own_loss(family, data, built):
    check_answer_loss(built(family), data, maskless=family not in MASKLESS_OFF)
