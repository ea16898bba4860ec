"""Phi3VForCausalLM of the test stand-in for microsoft/Phi-3-vision-128k-instruct's remote code.

Written for the kit's tests (tests/test_remote_code_phi3v.py), not Microsoft's file, which is not
available offline. What it keeps of the real model's interface, as its public modeling file shows it:

* ``Phi3VForCausalLM`` (``model`` + ``lm_head``), loaded through ``AutoModelForCausalLM`` by
  config.json's ``auto_map``; its backbone ``Phi3VModel`` holds ``embed_tokens``,
  ``vision_embed_tokens`` (a CLIP tower ``img_processor``, the ``glb_GN`` / ``sub_GN`` separators,
  an MLP ``img_projection``; its ``wte`` is the backbone's ``embed_tokens`` itself), ``layers`` and
  ``norm``;
* the forward's arguments, with no ``**kwargs``: ``input_ids, attention_mask, position_ids,
  past_key_values, inputs_embeds, pixel_values, image_sizes, labels, use_cache, output_attentions,
  output_hidden_states, return_dict``; the loss is the mean cross-entropy of the shifted labels;
* images as negative placeholder ids in ``input_ids`` (``-1`` for ``<|image_1|>``), replaced by the
  image features in order; ``input_ids`` is clamped **in place** (the real embedding does so too, and
  warns that a second forward on the same tensor sees no image);
* ``pixel_values`` ``[images, 1 + crops, 3, S, S]`` (the global view first, missing crops zero) with
  ``image_sizes`` ``[images, 2]`` (the padded height and width, whole crops): each crop's patch
  features merged 2x2, a ``sub_GN`` after each row, then ``glb_GN``, then the global view's
  (``hd_transform_order`` "sub_glb"); features of the CLIP layer ``layer_idx`` (-2) without its
  class token.

What differs: the decoder is transformers' own Phi-3 decoder layers (the real file carries its own copy),
written against this transformers' cache and generation API (``DynamicCache``, outputs' ``cache``,
``generate`` handing over ``cache`` and ``position_ids``), which the real 2024 file predates (it calls
``DynamicCache.from_legacy_cache`` and ``get_usable_length``, gone from transformers 5); the shared token
embedding is declared in ``_tied_weights_keys``, without which transformers 5 refuses to save the model;
the CLIP tower is tiny and configured from ``img_processor["clip"]``.
"""
import torch
from torch import nn
from torch.nn import CrossEntropyLoss
from transformers import CLIPVisionConfig, CLIPVisionModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.phi3.modeling_phi3 import Phi3DecoderLayer, Phi3RMSNorm, Phi3RotaryEmbedding

from .configuration_phi3_v import Phi3VConfig

# Image placeholders are the ids -1 .. -(MAX_INPUT_ID - 1); the processor writes -i for <|image_i|>.
MAX_INPUT_ID = int(1e9)


class Phi3ImageEmbedding(nn.Module):
    """Token embeddings with each image's features written over its placeholder positions."""

    def __init__(self, config: Phi3VConfig, wte: nn.Embedding):
        super().__init__()
        self.wte = wte
        vision = dict(config.img_processor)
        self.layer_idx = vision.get("layer_idx", -2)
        self.image_dim_out = vision["image_dim_out"]
        self.img_processor = CLIPVisionModel(CLIPVisionConfig(**vision["clip"]))
        dim = 4 * self.image_dim_out      # 2x2 patches merged into one feature
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, dim))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.img_projection = nn.Sequential(nn.Linear(dim, config.hidden_size), nn.GELU(),
                                            nn.Linear(config.hidden_size, config.hidden_size))
        self.crop_size = vision["clip"]["image_size"]
        self.vocab_size = config.vocab_size

    def get_img_features(self, crops: torch.Tensor) -> torch.Tensor:
        """Patch features ``[crops, patches, dim]`` of the tower's ``layer_idx`` layer (no class token)."""
        out = self.img_processor(crops, output_hidden_states=True)
        return out.hidden_states[self.layer_idx][:, 1:]

    def forward(self, input_ids: torch.LongTensor, pixel_values: torch.FloatTensor,
                image_sizes: torch.LongTensor | None = None) -> torch.FloatTensor:
        input_ids = input_ids.view(-1, input_ids.shape[-1])
        positions = torch.nonzero((input_ids < 0) & (input_ids > -MAX_INPUT_ID), as_tuple=True)
        has_image = len(positions[0].tolist()) > 0
        # In place, on the caller's tensor: the placeholders are gone after this forward.
        input_ids.clamp_min_(0).clamp_max_(self.vocab_size)
        hidden_states = self.wte(input_ids)
        if has_image:
            images, crops = pixel_values.shape[:2]
            features = self.get_img_features(pixel_values.flatten(0, 1).to(self.img_projection[0].weight.dtype))
            features = features.reshape(images, crops, -1, self.image_dim_out)
            projected = self.hd_feature_transform(features, image_sizes)
            hidden_states = hidden_states.index_put(positions, projected.to(hidden_states.dtype), accumulate=False)
        return hidden_states

    def hd_feature_transform(self, features: torch.Tensor, image_sizes) -> torch.Tensor:
        """``[images, 1 + crops, patches, dim]`` -> every image's token features, in placeholder order."""
        parts = []
        for i, (height, width) in enumerate(image_sizes.tolist()):
            rows, cols = height // self.crop_size, width // self.crop_size
            grid = self._merge_2x2(features[i, 1:1 + rows * cols], rows, cols)
            whole = self._merge_2x2(features[i, :1], 1, 1)
            parts += [self._with_row_ends(grid), self.glb_GN[0], self._with_row_ends(whole)]
        return self.img_projection(torch.cat(parts, dim=0))

    @staticmethod
    def _merge_2x2(crops: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """Crops ``[rows * cols, side * side, dim]`` (row-major) -> ``[rows * side/2, cols * side/2, 4 * dim]``."""
        side = int(crops.shape[1] ** 0.5)
        half, dim = side // 2, crops.shape[-1]
        grid = crops.reshape(rows, cols, half, 2, half, 2, dim).permute(0, 2, 1, 4, 3, 5, 6)
        return grid.reshape(rows * half, cols * half, 4 * dim)

    def _with_row_ends(self, grid: torch.Tensor) -> torch.Tensor:
        """``[h, w, dim]`` -> ``[h * (w + 1), dim]``: a ``sub_GN`` after each row."""
        ends = self.sub_GN[0].expand(grid.shape[0], 1, -1)
        return torch.cat([grid, ends], dim=1).reshape(-1, grid.shape[-1])


class Phi3VPreTrainedModel(PreTrainedModel):
    config_class = Phi3VConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Phi3DecoderLayer"]
    # As the real one: eager or flash-attention 2, no SDPA.
    _supports_sdpa = False
    _supports_flash_attn = True


class Phi3VModel(Phi3VPreTrainedModel):
    # The image embedding's ``wte`` is ``embed_tokens`` itself (as in the real model); this transformers
    # saves a weight shared by two names only where the model declares it (the real 2024 file predates that).
    _tied_weights_keys = {"vision_embed_tokens.wte.weight": "embed_tokens.weight"}

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.vision_embed_tokens = None
        if isinstance(config.embd_layer, dict):
            self.vision_embed_tokens = Phi3ImageEmbedding(config, wte=self.embed_tokens)
        self.layers = nn.ModuleList([Phi3DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Phi3RotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, pixel_values=None, image_sizes=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        if self.gradient_checkpointing and self.training:
            use_cache = False
        if inputs_embeds is None:
            if pixel_values is not None and image_sizes is not None:
                inputs_embeds = self.vision_embed_tokens(input_ids, pixel_values=pixel_values, image_sizes=image_sizes)
            else:
                inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(seen, seen + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        mask = create_causal_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  cache=past_key_values if use_cache else None, position_ids=position_ids)
        hidden_states = self.embed_dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        all_hidden = () if output_hidden_states else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states = layer(hidden_states, attention_mask=mask, position_ids=position_ids,
                                  cache=past_key_values if use_cache else None, use_cache=use_cache,
                                  position_embeddings=position_embeddings)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        cache = past_key_values if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden) if v is not None)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden)


class Phi3VForCausalLM(Phi3VPreTrainedModel, GenerationMixin):
    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_decoder(self):
        return self.model

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, pixel_values=None, image_sizes=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, pixel_values=pixel_values,
                             image_sizes=image_sizes, use_cache=use_cache, output_attentions=output_attentions,
                             output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.lm_head(outputs.last_hidden_state).float()
        loss = None
        if labels is not None:
            shift_logits = logits[..., :-1, :].reshape(-1, self.config.vocab_size)
            shift_labels = labels[..., 1:].reshape(-1).to(shift_logits.device)
            loss = CrossEntropyLoss()(shift_logits, shift_labels)
        if not return_dict:
            out = (logits, outputs.cache)
            return (loss, *out) if loss is not None else out
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                      hidden_states=outputs.hidden_states)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None,
                                      pixel_values=None, image_sizes=None, **kwargs):
        # This transformers' generate hands the cache over as ``cache``.
        past_key_values = kwargs.get("cache", past_key_values)
        seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        if seen:
            input_ids = input_ids[:, seen:]
        position_ids = kwargs.get("position_ids")   # this transformers' generate keeps them itself
        if attention_mask is not None and position_ids is None:
            # Left-padded batches: positions count the real tokens only.
            position_ids = attention_mask.long().cumsum(-1) - 1
            position_ids.masked_fill_(attention_mask == 0, 1)
        if position_ids is not None:
            position_ids = position_ids[:, -input_ids.shape[1]:]
        return {"input_ids": input_ids, "position_ids": position_ids, "past_key_values": past_key_values,
                "use_cache": kwargs.get("use_cache"), "attention_mask": attention_mask,
                "pixel_values": pixel_values, "image_sizes": image_sizes}
