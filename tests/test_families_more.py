"""More model families through ``run-finetune``'s Python API (tests/test_families.py has the first ones):
Qwen3-VL (deepstack features), Mllama (Llama 3.2 Vision: cross-attention to tiled images) and
Phi-4-multimodal (a causal LM whose image inputs have their own names). Each is a tiny random model of
the real transformers class, saved with its real processor by the test itself; it trains with LoRA
and in full, evaluates by generation and saves; its answer-only loss equals the model's own loss on
the answer, and the image changes it.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from _ft_fixtures import draw, jpeg, make_rows

torch = pytest.importorskip("torch")

from test_families import (HIDDEN, _save, _text, built_models, check_answer_loss,  # noqa: E402
                           family_tokenizer, train_two_steps, data, isolated)  # noqa: F401 - data, isolated: fixtures

from finetune.families.qwen2_vl import image_only_class  # noqa: E402
from finetune.twins import QWEN_TEMPLATE  # noqa: E402


def build_qwen3_vl(out: Path) -> Path:
    """Qwen3-VL: Qwen2.5-VL's flat patches and M-RoPE, plus deepstack (a tower layer's features added
    to the decoder's first layer at the image tokens)."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
                                 ("<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"))
    ids = {f"{k}_token_id": tokenizer.convert_tokens_to_ids(t) for k, t in (
        ("image", "<|image_pad|>"), ("video", "<|video_pad|>"), ("vision_start", "<|vision_start|>"),
        ("vision_end", "<|vision_end|>"))}
    text = _text(tokenizer, head_dim=16, rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True})
    vision = dict(depth=2, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=HIDDEN, num_position_embeddings=16,
                  deepstack_visual_indexes=[0])
    config = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    torch.manual_seed(0)
    model = tf.Qwen3VLForConditionalGeneration(config)
    images = tf.Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=56 * 56, patch_size=14, merge_size=2,
                                         temporal_patch_size=2)
    # Saved without a video processor; run-finetune must load it without one (no torchvision here).
    processor = image_only_class(tf.Qwen3VLProcessor)(image_processor=images, tokenizer=tokenizer,
                                                      chat_template=QWEN_TEMPLATE)
    return _save(model, processor, tokenizer, out)


# Llama 3.2 Vision's chat template, shortened: the image token where the image goes, no image tokens after it.
MLLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% for c in m.content %}{% if c.type == 'image' %}<|image|>{% else %}{{ c.text }}{% endif %}{% endfor %}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build_mllama(out: Path) -> Path:
    """Mllama (Llama 3.2 Vision): a tiled tower (28 px tiles, up to 4 an image) whose output layer 1
    of the decoder cross-attends through cross_attention_mask; aspect_ratio_ids and _mask."""
    import transformers as tf

    tokenizer = family_tokenizer({"image_token": "<|image|>"}, (
        "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"))
    text = dict(_text(tokenizer), cross_attention_layers=[1], rope_parameters={"rope_type": "default",
                                                                               "rope_theta": 10000.0})
    # The tower's output is its last layer and one intermediate layer's, side by side.
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1, num_global_layers=1,
                  attention_heads=2, image_size=28, patch_size=14, max_num_tiles=4, intermediate_layers_indices=[0],
                  vision_output_dim=2 * HIDDEN)
    config = tf.MllamaConfig(text_config=text, vision_config=vision, image_token_index=tokenizer.image_token_id)
    torch.manual_seed(0)
    model = tf.MllamaForConditionalGeneration(config)
    # Mllama starts its cross-attention gates at zero: the decoder would not see the image at all.
    for name, param in model.named_parameters():
        if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
            torch.nn.init.constant_(param, 1.0)
    images = tf.MllamaImageProcessorPil(size={"height": 28, "width": 28}, max_image_tiles=4)
    processor = tf.MllamaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=MLLAMA_TEMPLATE)
    return _save(model, processor, tokenizer, out)


def build_phi4_multimodal(out: Path) -> Path:
    """Phi-4-multimodal: a causal LM whose backbone holds a SigLIP-style tower (448 px crops of 14 px
    patches: the processor's token counts assume them) and a tiny speech encoder it never runs here.
    Its image processor is the torch port (the real one needs torchvision), saved under the real name."""
    import transformers as tf

    from finetune.families.phi4_multimodal import image_processor_class

    tokenizer = family_tokenizer({"image_token": "<|image|>", "audio_token": "<|audio|>"},
                                 ("<|user|>", "<|assistant|>"))
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                  image_size=448, patch_size=14, crop_size=448, image_token_id=tokenizer.image_token_id,
                  feature_layer=-1)
    audio = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_blocks=1, num_attention_heads=2,
                 ext_pw_out_channel=HIDDEN, depthwise_separable_out_channel=HIDDEN, nemo_conv_channels=HIDDEN,
                 audio_token_id=tokenizer.audio_token_id)
    config = tf.Phi4MultimodalConfig(**_text(tokenizer), vision_config=vision, audio_config=audio,
                                     original_max_position_embeddings=4096, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = tf.Phi4MultimodalForCausalLM(config)
    # Phi-4 starts the image separators at zero; the projection is random, so the image is seen anyway.
    images = image_processor_class()(dynamic_hd=4)
    # No chat template: Phi4MultimodalProcessor drops a saved one on loading (its __init__ names none), so
    # prompts take the Phi-3 chat format, which is Phi-4's own.
    processor = tf.Phi4MultimodalProcessor(image_processor=images, audio_processor=tf.Phi4MultimodalFeatureExtractor(),
                                           tokenizer=tokenizer)
    return _save(model, processor, tokenizer, out)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen3-vl": build_qwen3_vl,
    "mllama": build_mllama,
    "phi4-multimodal": build_phi4_multimodal,
}
FAMILIES = tuple(BUILDERS)
# The processor output holding the pixels, where it is not ``pixel_values``.
PIXELS = {"phi4-multimodal": "image_pixel_values"}
# Families that turn the fast preset's maskless lever off (Qwen3-VL's M-RoPE reads the mask).
MASKLESS_OFF = {"qwen3-vl"}
# Families whose decoder the kit does not find under ``model.language_model``: answer_only_last_mlp is off.
NO_LAST_MLP = {"phi4-multimodal"}


# The families' data and cache isolation as test_families has them; models from this module's builders.
built = built_models(BUILDERS)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_evaluates_and_saves(family, method, data, built, tmp_path, capfd):
    said = train_two_steps(built(family), data, tmp_path / "run", method, capfd)
    if method == "lora":   # the fast preset: each lever that cannot apply says so once
        assert said.count("maskless off") == (family in MASKLESS_OFF), said
        assert said.count("image feature cache off") == 1, said
        assert f"({family})" in said, said   # the family the kit took the model for
        assert said.count("answer_only_last_mlp off") == (family in NO_LAST_MLP), said


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_loss_equals_the_models_own_loss(family, data, built):
    check_answer_loss(built(family), data, maskless=family not in MASKLESS_OFF, pixels=PIXELS.get(family, "pixel_values"))


def test_mllama_answer_and_generation_see_the_image(data, built):
    """Mllama's cross_attention_mask, padded by the collator: in training, every answer token sees the
    image's tiles as the prompt's last token does, padding sees none; in generation (left padding) each
    prompt keeps its own rows, ending where ``generate`` extends them. And text-only rows, which its
    cross-attention cannot batch with image rows, are skipped."""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import Collator, RowsDataset, build_prompt, build_text_prompt, load_splits
    from finetune.models import load_pretrained

    loaded = load_pretrained(str(built("mllama")))
    prompt = build_prompt(loaded, DEFAULT_QUESTION)
    rows = RowsDataset(load_splits(str(data))["train"]).__getitems__([0, 1, 2, 3])
    batch = Collator(loaded.processor, prompt, loaded.end_token)(rows)
    mask, labels = batch["cross_attention_mask"], batch["labels"]
    assert mask.shape[:2] == batch["input_ids"].shape and mask.shape[2] == 1
    for i in range(len(rows)):
        answer = (labels[i] != -100).nonzero().squeeze(1)
        first, last = int(answer[0]), int(answer[-1])
        assert mask[i, first - 1].sum() > 0   # the prompt's end sees the image
        assert torch.equal(mask[i, first:last + 1], mask[i, first - 1].expand(last + 1 - first, -1, -1))
        assert not mask[i, last + 1:].any() and not mask[i, 0].any()   # padding, and <bos> before the image
    generation = Collator(loaded.processor, prompt, loaded.end_token, train=False)(rows)
    gen_mask, attention = generation["cross_attention_mask"], generation["attention_mask"]
    assert gen_mask[:, -1].sum() > 0 and not gen_mask[attention == 0].any()
    assert build_text_prompt(loaded, DEFAULT_QUESTION) is None


def test_phi4_multimodal_takes_images_of_several_crops(built):
    """The torch port of Phi-4-multimodal's image processor cuts a wide image into several 448 px crops
    (padded white to whole crops, their padding masked) and counts the image tokens the model fills:
    a batch of a one-crop and a four-crop image runs, and its answer loss equals the model's own.
    (Checked against the torchvision original: the same crops to 2e-7, masks, sizes and token counts.)"""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import INDEX_KEY, Collator, build_prompt
    from finetune.loss import compute_loss, with_host_indices
    from finetune.models import load_pretrained

    loaded = load_pretrained(str(built("phi4-multimodal")))
    rows = make_rows(2, seed=3)
    wide = draw("square", (200, 40, 40), 40, random.Random(0)).resize((600, 500))
    rows[1]["image"] = {"bytes": jpeg(wide), "path": None}
    for i, row in enumerate(rows):
        row[INDEX_KEY] = i
    collator = Collator(loaded.processor, build_prompt(loaded, DEFAULT_QUESTION), loaded.end_token)
    batch = with_host_indices(collator(rows))
    assert batch["image_pixel_values"].shape[:2] == (2, 5)   # the global view and up to four crops
    assert batch["image_sizes"].tolist() == [[448, 448], [896, 896]]
    assert not batch["image_attention_mask"][1, 3:, -10:].any()   # the white padding's patches, masked
    model = loaded.model.eval()
    with torch.no_grad():
        answer = compute_loss(model, batch, kind="answer").loss
        plain = compute_loss(model, batch, kind="plain").loss
    assert torch.isfinite(answer) and abs(float(answer) - float(plain)) < 1e-4


def test_phi4_multimodal_generates_past_an_image_token(data, built):
    """This random model writes its image token within a few steps, and Phi-4's generate then fails
    (it drops image_sizes after the first step but keeps the pixels): evaluation never generates it."""
    from finetune.config import DEFAULT_QUESTION
    from finetune.data import build_prompt, load_splits
    from finetune.evaluate import generate_texts
    from finetune.models import load_pretrained

    loaded = load_pretrained(str(built("phi4-multimodal")))
    test = load_splits(str(data))["test"].select(range(2))
    texts = generate_texts(loaded.model, loaded, test, build_prompt(loaded, DEFAULT_QUESTION), batch_size=2,
                           max_new_tokens=12, device=torch.device("cpu"))
    assert sorted(texts) == [0, 1]
