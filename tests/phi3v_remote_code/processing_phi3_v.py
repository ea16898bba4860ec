"""Phi3VProcessor of the test stand-in for microsoft/Phi-3-vision-128k-instruct's remote code.

Written for the kit's tests (tests/test_remote_code_phi3v.py), not Microsoft's file. It keeps the real
processor's calling convention: ``processor(text, images=None, padding=False, truncation=None,
max_length=None, return_tensors="pt")`` with one prompt string (no other keyword); the prompt's
``<|image_i|>`` tags, numbered from 1, split it into chunks, each tokenized on its own (with the
tokenizer's own special tokens), and each tag becomes ``num_img_tokens`` copies of the id ``-i``; it
returns ``input_ids``, ``attention_mask``, ``pixel_values`` and ``image_sizes``. The tags are not tokens
of the tokenizer. Like the real one it never calls ``ProcessorMixin.__init__`` and names its image
processor class by a name it puts on the ``transformers`` module.
"""
import re

import torch
import transformers
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_phi3_v import Phi3VImageProcessor

transformers.Phi3VImageProcessor = Phi3VImageProcessor

IMAGE_TAG = r"<\|image_\d+\|>"


class Phi3VProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "Phi3VImageProcessor"
    tokenizer_class = ("LlamaTokenizer", "LlamaTokenizerFast")
    special_image_token = "<|image|>"

    def __init__(self, image_processor, tokenizer):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.num_img_tokens = image_processor.num_img_tokens

    def __call__(self, text, images=None, padding=False, truncation=None, max_length=None, return_tensors="pt"):
        image_inputs = self.image_processor(images, return_tensors=return_tensors) if images is not None else {}
        return self._convert_images_texts_to_inputs(image_inputs, text, padding=padding, truncation=truncation,
                                                    max_length=max_length, return_tensors=return_tensors)

    def _convert_images_texts_to_inputs(self, images, texts, padding=False, truncation=None, max_length=None,
                                        return_tensors=None):
        if not len(images):
            encoded = self.tokenizer(texts, return_tensors=return_tensors, padding=padding, truncation=truncation,
                                     max_length=max_length)
            return BatchFeature(data={**encoded})
        chunks = [self.tokenizer(chunk).input_ids for chunk in re.split(IMAGE_TAG, texts)]
        tags = [int(tag[len("<|image_"):-len("|>")]) for tag in re.findall(IMAGE_TAG, texts)]
        if sorted(set(tags)) != list(range(1, len(set(tags)) + 1)):
            raise ValueError(f"image tags must be numbered 1, 2, ... without gaps, not {tags}")
        if len(set(tags)) != len(images["pixel_values"]):
            raise ValueError(f"{len(set(tags))} image tags for {len(images['pixel_values'])} images")
        counts = [int(n) for n in images["num_img_tokens"]]
        input_ids = list(chunks[0])
        for tag, chunk in zip(tags, chunks[1:]):
            input_ids += [-tag] * counts[tag - 1] + list(chunk)
        input_ids = torch.tensor(input_ids, dtype=torch.long)[None]
        attention_mask = (input_ids > -1000000).long()
        return BatchFeature(data={"input_ids": input_ids, "attention_mask": attention_mask,
                                  "pixel_values": images["pixel_values"], "image_sizes": images["image_sizes"]})

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names))
