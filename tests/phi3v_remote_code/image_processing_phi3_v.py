"""Phi3VImageProcessor of the test stand-in for microsoft/Phi-3-vision-128k-instruct's remote code.

Written for the kit's tests (tests/test_remote_code_phi3v.py), not Microsoft's file. It keeps the real
processor's outputs and arithmetic: the image (turned landscape for the purpose) is resized so its
width is ``scale`` crops, ``scale`` the largest with ``scale * ceil(scale / aspect) <= num_crops``, then
padded white to whole crops; ``pixel_values`` ``[images, num_crops + 1, 3, S, S]`` holds the whole image
resized to one crop, then the crops row by row, then zero crops up to ``num_crops + 1``;
``image_sizes`` ``[images, 2]`` the padded height and width; ``num_img_tokens`` each image's count,
``(crops + 1) * num_img_tokens + 1 + (rows + 1) * sqrt(num_img_tokens)``.

What differs: the real one works with torchvision at a fixed 336 px crop; this one with PIL and torch at
``crop_size`` px.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


class Phi3VImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(self, num_crops=1, num_img_tokens=144, crop_size=336, image_mean=OPENAI_CLIP_MEAN,
                 image_std=OPENAI_CLIP_STD, do_convert_rgb=True, **kwargs):
        super().__init__(**kwargs)
        self.num_crops = num_crops
        self.num_img_tokens = num_img_tokens
        self.crop_size = crop_size
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.do_convert_rgb = do_convert_rgb

    def _layout(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(rows, cols, resized width, resized height)`` of an image's crop grid."""
        portrait = width < height
        long_side, short_side = (height, width) if portrait else (width, height)
        aspect = long_side / short_side
        scale = 1
        while (scale + 1) * math.ceil((scale + 1) / aspect) <= self.num_crops:
            scale += 1
        new_long = scale * self.crop_size
        new_short = int(new_long / aspect)
        across = math.ceil(new_short / self.crop_size)
        if portrait:
            return scale, across, new_short, new_long
        return across, scale, new_long, new_short

    def calc_num_image_tokens_from_image_size(self, width, height):
        rows, cols, _, _ = self._layout(width, height)
        side = int(math.isqrt(self.num_img_tokens))
        return (rows * cols + 1) * self.num_img_tokens + 1 + (rows + 1) * side

    def calc_num_image_tokens(self, images):
        images = images if isinstance(images, list) else [images]
        return [self.calc_num_image_tokens_from_image_size(*image.size) for image in images]

    def _one(self, image):
        """One PIL image -> (crops ``[1 + rows * cols, 3, S, S]``, padded ``[height, width]``)."""
        from PIL import Image

        if self.do_convert_rgb:
            image = image.convert("RGB")
        crop = self.crop_size
        rows, cols, new_w, new_h = self._layout(*image.size)
        resized = image.resize((new_w, new_h), Image.BICUBIC)
        canvas = Image.new("RGB", (cols * crop, rows * crop), (255, 255, 255))
        canvas.paste(resized, ((cols * crop - new_w) // 2, (rows * crop - new_h) // 2))
        pixels = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)
        pixels = (pixels - torch.tensor(self.image_mean).view(3, 1, 1)) / torch.tensor(self.image_std).view(3, 1, 1)
        whole = F.interpolate(pixels[None], size=(crop, crop), mode="bicubic", align_corners=False)
        crops = pixels.reshape(3, rows, crop, cols, crop).permute(1, 3, 0, 2, 4).reshape(-1, 3, crop, crop)
        return torch.cat([whole, crops]), [rows * crop, cols * crop]

    def preprocess(self, images, return_tensors=None, **kwargs):
        images = images if isinstance(images, list) else [images]
        done = [self._one(image) for image in images]
        total = self.num_crops + 1
        pixel_values = torch.stack([F.pad(p, (0, 0, 0, 0, 0, 0, 0, total - len(p))) for p, _ in done])
        data = {"pixel_values": pixel_values, "image_sizes": torch.tensor([s for _, s in done], dtype=torch.long),
                "num_img_tokens": self.calc_num_image_tokens(images)}
        return BatchFeature(data=data, tensor_type=return_tensors)
