"""Phi-4-multimodal: a Phi decoder whose backbone (``model.model``) also holds the image and audio
encoders (``embed_tokens_extend``). transformers files it as a causal LM (``Phi4MultimodalForCausalLM``),
so it loads through ``AutoModelForCausalLM`` (``Family.causal_lm``). Its image inputs have their own
names: ``image_pixel_values`` ``[images, crops, 3, 448, 448]`` (a global view and the image cut into
448 px crops, their count varying with the image's shape: the collator zero-pads it),
``image_sizes`` and ``image_attention_mask`` (which 14 px patches of each crop are real).

The loss runs the model's own backbone, which computes the image features, arranges them in rows
with separators and writes them over the image tokens (no Llava shortcut, no feature cache). The
decoder is causal with positions from the sequence index, so a right-padded batch needs no mask.

Its image processor needs torchvision; ``image_only_processor`` loads the processor with a port of it
to torch alone (``image_processor_class``, the same crops, masks and token counts), for machines
without a torchvision that matches torch.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from .base import FEATURE_CACHE, Family


def crop_layout(height: int, width: int, crop: int, max_crops: int) -> tuple[tuple[int, int], tuple[int, int],
                                                                             tuple[int, int]]:
    """The crop grid ``(across, down)`` of an image, the ``(width, height)`` it is resized to and the
    ``(width, height)`` of white padding that fills the grid: Phi4MultimodalImageProcessor's layout."""
    across, down = math.ceil(width / crop), math.ceil(height / crop)
    if across * down > max_crops:
        sides = range(1, max_crops + 1)
        ratios = sorted({(i, j) for i in sides for j in sides if i * j <= max_crops}, key=lambda r: r[0] * r[1])
        across, down = _closest_ratio(width / height, ratios, width * height, crop)
    target_w, target_h = crop * across, crop * down
    if target_w / width < target_h / height:
        new_size, padding = (target_w, int(height * target_w / width)), (0, target_h - int(height * target_w / width))
    else:
        new_size, padding = (int(width * target_h / height), target_h), (target_w - int(width * target_h / height), 0)
    if min(new_size[1], target_h) < 10 or min(new_size[0], target_w) < 10:
        raise ValueError(f"the aspect ratio is very extreme {new_size}")
    return (across, down), new_size, padding


def _closest_ratio(aspect: float, ratios: list[tuple[int, int]], area: int, crop: int) -> tuple[int, int]:
    best, best_diff = (1, 1), float("inf")
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best, best_diff = ratio, diff
        elif diff == best_diff and area > 0.5 * crop * crop * ratio[0] * ratio[1]:
            best = ratio
    return best


def image_processor_class() -> type:
    """``Phi4MultimodalImageProcessor`` on torch alone, as a PIL-backend class: transformers saves it
    under the real class's name, so the folder it saves loads the real one where torchvision is.

    The real one resizes the ``uint8`` image with torchvision's antialiased bilinear resize (torch's
    own ``interpolate``, which torchvision calls), pads it white to whole crops, normalises it and
    resizes a copy to one crop (bicubic, no antialias) as the global view.
    """
    import torch
    import torch.nn.functional as F
    from transformers.image_processing_backends import PilBackend
    from transformers.image_processing_base import BatchFeature
    from transformers.image_utils import PILImageResampling
    from transformers.processing_utils import ImagesKwargs

    class Phi4MultimodalImageProcessorKwargs(ImagesKwargs, total=False):
        patch_size: int
        dynamic_hd: int

    class Phi4MultimodalImageProcessorPil(PilBackend):
        resample = PILImageResampling.BICUBIC
        size = {"height": 448, "width": 448}
        patch_size = 14
        dynamic_hd = 36
        image_mean = [0.5, 0.5, 0.5]
        image_std = [0.5, 0.5, 0.5]
        do_rescale = True
        do_normalize = True
        do_convert_rgb = True
        valid_kwargs = Phi4MultimodalImageProcessorKwargs
        model_input_names = ["image_pixel_values", "image_sizes", "image_attention_mask"]

        def _preprocess(self, images, size, rescale_factor, image_mean, image_std, patch_size, dynamic_hd,
                        return_tensors=None, **kwargs):
            if size.height != size.width:
                raise ValueError("Phi4MultimodalImageProcessor only supports square sizes.")
            crop = size.height
            mean = torch.tensor(image_mean).view(3, 1, 1) / rescale_factor
            std = torch.tensor(image_std).view(3, 1, 1) / rescale_factor
            out = [_one_image(torch.from_numpy(image), crop, patch_size, dynamic_hd, mean, std) for image in images]
            most = max(pixels.shape[0] for pixels, _, _, _ in out)
            data = {
                # Missing crops: zero pixels, a mask of ones (as the real one pads them).
                "image_pixel_values": torch.stack([F.pad(p, (0, 0, 0, 0, 0, 0, 0, most - len(p)))
                                                   for p, _, _, _ in out]),
                "image_sizes": torch.tensor([hw for _, _, hw, _ in out], dtype=torch.long),
                "image_attention_mask": torch.stack([F.pad(m, (0, 0, 0, 0, 0, most - len(m)), value=1.0)
                                                     for _, m, _, _ in out]),
                "num_img_tokens": [tokens for _, _, _, tokens in out],
            }
            return BatchFeature(data=data, tensor_type=return_tensors)

        def get_number_of_image_tokens(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
            kw = self._merge_and_standardize_kwargs(**(images_kwargs or {}))
            crop = kw["size"]["height"]
            grid, _, padding = crop_layout(height, width, crop, kw["dynamic_hd"])
            return _token_count(_crop_mask(grid, padding, kw["patch_size"], crop // kw["patch_size"]),
                                crop // kw["patch_size"])

    return Phi4MultimodalImageProcessorPil


def _one_image(image, crop, patch, max_crops, mean, std):
    """One ``uint8`` ``[3, H, W]`` image -> (crops ``[1 + n, 3, crop, crop]``, their patch masks, the
    padded size ``[h, w]``, its token count)."""
    import torch
    import torch.nn.functional as F

    grid, (new_w, new_h), (pad_w, pad_h) = crop_layout(image.shape[-2], image.shape[-1], crop, max_crops)
    side = crop // patch
    mask = _crop_mask(grid, (pad_w, pad_h), patch, side)
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    padded = F.pad(resized, (0, pad_w, 0, pad_h), value=255)[0]
    pixels = (padded.float() - mean) / std
    whole = F.interpolate(pixels[None], size=(crop, crop), mode="bicubic", align_corners=False)[0]
    height, width = pixels.shape[-2:]
    crops = pixels.reshape(3, height // crop, crop, width // crop, crop).permute(1, 3, 0, 2, 4)
    crops = crops.reshape(-1, 3, crop, crop)
    masks = mask.reshape(height // crop, side, width // crop, side).transpose(1, 2).reshape(-1, side, side)
    return (torch.cat([whole[None], crops]), torch.cat([torch.ones(1, side, side), masks]), [height, width],
            _token_count(mask, side))


def _crop_mask(grid, padding, patch, side):
    """Which 14 px patches of the crop grid are image, not white padding (``[rows, cols]``)."""
    import torch

    mask = torch.ones(side * grid[1], side * grid[0])
    if padding[0] >= patch:
        mask[:, -math.floor(padding[0] / patch):] = 0
    if padding[1] >= patch:
        mask[-math.floor(padding[1] / patch):, :] = 0
    return mask


def _token_count(mask, side) -> int:
    """The crops' tokens after 2x2 pooling, a separator a row, the global view's 16x16 and its 16
    separators, and the one between them (as the real processor counts them)."""
    rows, cols = mask.shape[0] // side, mask.shape[1] // side
    pooled = mask.reshape(rows, side, cols, side).transpose(1, 2)[:, :, 0::2, 0::2]
    pooled = pooled.transpose(1, 2).reshape(rows * pooled.shape[2], cols * pooled.shape[3])
    return 256 + 1 + int(pooled.sum()) + int(pooled[:, 0].sum()) + 16


def image_only_processor(path: str, kwargs: dict) -> Any:
    """The Phi-4-multimodal processor saved at ``path``, its image processor ``image_processor_class``
    (with the saved settings: the class reads the real one's files)."""
    import transformers

    images = image_processor_class().from_pretrained(path, **kwargs)
    return transformers.Phi4MultimodalProcessor.from_pretrained(path, image_processor=images, **kwargs)


def image_pass(backbone, inputs: dict, input_ids):
    """Phi-4-multimodal's image path (it has no get_image_features): its image embedding runs the tower,
    arranges the crops' features with its separator parameters, projects them and writes them at the image
    tokens of ``input_ids``, here over zeros: only the features carry a gradient."""
    import torch

    zeros = torch.zeros(*input_ids.shape, backbone.config.hidden_size, device=input_ids.device,
                        dtype=backbone.embed_tokens.weight.dtype)
    return backbone.embed_tokens_extend.image_embed(input_ids, zeros, **inputs)


PHI4_MULTIMODAL = Family(
    name="phi4-multimodal",
    model_types=("phi4_multimodal",),
    processors=("Phi4MultimodalProcessor",),
    causal_lm=True,
    dropped=("token_type_ids",),
    off_levers=MappingProxyType({
        FEATURE_CACHE: "its backbone computes and arranges its image features in its own forward",
    }),
    image_only_processor=image_only_processor,
    image_pass=image_pass,
)
