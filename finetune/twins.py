"""Built-in CPU twins of the families people fine-tune: random-weight models of the real transformers
classes with their real processors, at sizes that train on a 2-core CPU in seconds.

* ``tiny-qwen2.5-vl``: ``Qwen2_5_VLForConditionalGeneration`` (flat patches, ``image_grid_thw``, M-RoPE,
  windowed vision attention) with ``Qwen2_5_VLProcessor`` (image-only: no video processor, which needs
  torchvision);
* ``tiny-gemma3``: ``Gemma3ForConditionalGeneration`` (SigLIP tower, pooled projector, bidirectional
  attention over the image) with ``Gemma3Processor``;
* ``tiny-smolvlm``: SmolVLM as its Instruct checkpoints ship, ``Idefics3ForConditionalGeneration``
  (SigLIP tower, pixel-shuffle connector, Llama decoder) with ``Idefics3Processor`` (SmolVLM2's own
  ``SmolVLMProcessor`` needs num2words and torchvision).

Each has 16 image tokens for a square picture, and the decoder of ``tiny`` (2 layers, 128 wide). The
tokenizer is the run's, trained on the dataset's text (finetune/tokenizer.py) with the family's image
and chat markers added (``Twin.tokens``); the chat templates are the families' formats, shortened.
One builder a family: the model's config and processor from that tokenizer.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .families.qwen2_vl import image_only_class
from .loaded_model import LoadedModel, random_weights
from .tokenizer import END

# torch and transformers are imported in the functions that use them (the CLI imports this module
# through builtins and config to parse its flags).

HIDDEN, LAYERS, HEADS, INTERMEDIATE = 128, 2, 4, 256       # tiny's decoder
VISION = dict(hidden=64, layers=2, heads=2, intermediate=128)
IMAGE_TOKENS = 16

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% for c in m.content %}{% if c.type == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c.text }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{% for c in m.content %}{% if c.type == 'image' %}<start_of_image>{% else %}{{ c.text }}{% endif %}"
    "{% endfor %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m.role | capitalize }}:{% for c in m.content %}{% if c.type == 'image' %}"
    "<image>{% else %}{{ c.text }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class Twin:
    """A twin: its transformers class, the special tokens its processor and chat template need (by the
    attribute name processors look them up by), and its builder: tokenizer -> (config, processor)."""

    model_class: str
    tokens: Mapping[str, str]
    build: Callable[[Any], tuple[Any, Any]]
    init: Callable[[Any], None] | None = None   # adjusts a freshly built model (random init the class lacks)
    # As tiny: a random model must learn to see, and learns faster in full.
    train_vision: bool = True
    train_embeddings: bool = True
    default_lr: float = 2e-3
    default_method: str = "full"
    full_lr: float | None = 5e-4
    default_epochs: float = 6.0
    # As tiny: the random tower first learns to read the answers (finetune/vision_warmup.py).
    vision_warmup_epochs: float = 18.0


def _text(tokenizer, **kw) -> dict:
    return dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS // 2,
                max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.convert_tokens_to_ids(END), tie_word_embeddings=False, **kw)


def _ids(tokenizer, **names: str) -> dict:
    return {key: tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}


def build_qwen25(tokenizer):
    """Qwen2.5-VL: 14 px patches merged 2 x 2; every picture resized to 112 x 112 px (16 tokens when square)."""
    import transformers as tf

    head_dim = HIDDEN // HEADS   # M-RoPE's sections add up to half of it
    text = _text(tokenizer, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "mrope_section": [head_dim // 4, head_dim // 8, head_dim // 8]})
    vision = dict(depth=VISION["layers"], hidden_size=VISION["hidden"], num_heads=VISION["heads"],
                  intermediate_size=VISION["intermediate"], out_hidden_size=HIDDEN, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **_ids(
        tokenizer, image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>"))
    pixels = 112 * 112
    images = tf.Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2,
                                         temporal_patch_size=2)
    processor = image_only_class(tf.Qwen2_5_VLProcessor)(image_processor=images, tokenizer=tokenizer,
                                                         chat_template=QWEN_TEMPLATE)
    return config, processor


def build_gemma3(tokenizer):
    """Gemma 3: a SigLIP tower over 64 px (8 px patches), average-pooled 2 x 2 to 16 tokens."""
    import transformers as tf

    text = _text(tokenizer, head_dim=HIDDEN // HEADS, query_pre_attn_scalar=HIDDEN // HEADS, sliding_window=128,
                 layer_types=["sliding_attention", "full_attention"])
    vision = dict(model_type="siglip_vision_model", hidden_size=VISION["hidden"], num_hidden_layers=VISION["layers"],
                  num_attention_heads=VISION["heads"], intermediate_size=VISION["intermediate"], image_size=64,
                  patch_size=8)
    config = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=IMAGE_TOKENS,
                             tie_word_embeddings=False, **_ids(
                                 tokenizer, image_token_index="<image_soft_token>",
                                 boi_token_index="<start_of_image>", eoi_token_index="<end_of_image>"))
    images = tf.Gemma3ImageProcessorPil(size={"height": 64, "width": 64})
    processor = tf.Gemma3Processor(image_processor=images, tokenizer=tokenizer, image_seq_length=IMAGE_TOKENS,
                                   chat_template=GEMMA3_TEMPLATE)
    return config, processor


def init_gemma3(model) -> None:
    """Gemma 3 initialises its image projection to zeros: every picture would read the same to the decoder."""
    import torch

    weight = model.model.multi_modal_projector.mm_input_projection_weight
    if weight.device.type != "meta":
        torch.nn.init.normal_(weight, std=0.5)


def build_smolvlm(tokenizer):
    """SmolVLM (Idefics3 classes): SigLIP over 64 px (8 px patches), pixel shuffle 2 x 2 to 16 tokens; no
    image splitting (the pictures are small)."""
    import transformers as tf

    text = dict(_text(tokenizer), model_type="llama")
    vision = dict(hidden_size=VISION["hidden"], num_hidden_layers=VISION["layers"], num_attention_heads=VISION["heads"],
                  intermediate_size=VISION["intermediate"], image_size=64, patch_size=8)
    config = tf.Idefics3Config(text_config=text, vision_config=vision, scale_factor=2, tie_word_embeddings=False,
                               **_ids(tokenizer, image_token_id="<image>"))
    images = tf.Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 64},
                                          do_image_splitting=False)
    processor = tf.Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=IMAGE_TOKENS,
                                     chat_template=SMOLVLM_TEMPLATE)
    return config, processor


TWINS: dict[str, Twin] = {
    "tiny-qwen2.5-vl": Twin("Qwen2_5_VLForConditionalGeneration", MappingProxyType({
        "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_start_token": "<|vision_start|>",
        "vision_end_token": "<|vision_end|>", "im_start_token": "<|im_start|>", "im_end_token": "<|im_end|>"}),
        build_qwen25),
    "tiny-gemma3": Twin("Gemma3ForConditionalGeneration", MappingProxyType({
        "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
        "start_of_turn_token": "<start_of_turn>", "end_of_turn_token": "<end_of_turn>"}),
        build_gemma3, init=init_gemma3),
    "tiny-smolvlm": Twin("Idefics3ForConditionalGeneration", MappingProxyType({
        "image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>",
        "im_start_token": "<|im_start|>"}), build_smolvlm),
}


def build_twin(name: str, tokenizer, *, device=None, dtype=None, seed: int = 0) -> LoadedModel:
    """A twin with random weights, built directly on ``device`` (``"meta"``: the skeleton only)."""
    twin = TWINS[name]
    missing = [t for t in twin.tokens.values() if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"{name} needs a tokenizer with {', '.join(missing)} (train_tokenizer's extra_special_tokens)")
    config, processor = twin.build(tokenizer)
    # The tokenizer's end-of-text token is END (finetune/tokenizer.py), where generation stops.
    model = random_weights(config, tokenizer, device=device, dtype=dtype, seed=seed, init=twin.init)
    return LoadedModel(
        model=model, processor=processor, name=name, builtin=True,
        image_token=processor.image_token,
        # As a saved twin reloaded by path gets it (models.load_pretrained): the tokenizer's END.
        end_token=END,
        train_vision=twin.train_vision, train_embeddings=twin.train_embeddings, default_lr=twin.default_lr,
        phi3_chat=False,   # the family's chat template
    )
