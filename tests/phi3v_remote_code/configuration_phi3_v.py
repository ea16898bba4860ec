"""Phi3VConfig of the test stand-in for microsoft/Phi-3-vision-128k-instruct's remote code.

Written for the kit's tests (tests/test_remote_code_phi3v.py), not Microsoft's file: it keeps the real
config's interface (``model_type`` "phi3_v", a Phi-3 decoder's fields, ``embd_layer`` and ``img_processor``
dicts) on top of transformers' own ``Phi3Config``. The real ``img_processor`` names a fixed CLIP
ViT-L/14-336 by ``model_name``; here it carries a tiny CLIP vision config (``clip``) instead.
"""
from huggingface_hub.dataclasses import strict
from transformers import Phi3Config


@strict
class Phi3VConfig(Phi3Config):
    model_type = "phi3_v"

    # {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
    #  "use_hd_transform": True, "with_learnable_separator": True}, as the real config.json holds.
    embd_layer: dict | str = "default"
    # {"name": "clip_vision_model", "image_dim_out", "num_img_tokens", "layer_idx", "type_feature", "clip"}
    img_processor: dict | None = None
