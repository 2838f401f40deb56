"""InternVL3 in transformers' native format: 1-D RoPE (a Qwen2 text model), pixel-shuffled
InternViT features through an MLP projector.

Each image is encoded as a single tile (``crop_to_patches=False``): a fixed grid of
``(image_size / patch / 2)^2`` tokens (256 for the real 448-px models), the same for
reference views and queries, which keeps memories comparable and per-frame cost bounded on a
robot. A clip is given as several images ("Frame1: <img>...</img>"), as InternVL does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ego_ros.backends.base import FamilyAdapter, Visual


class InternVLAdapter(FamilyAdapter):
    family = "internvl"
    model_types = ("internvl",)
    uses_3d_positions = False

    def __init__(self, model, processor, max_image_tokens: int | None = None) -> None:
        super().__init__(model, processor, max_image_tokens)  # fixed tokens per tile: unused
        tok = self.tokenizer
        self.image_token = int(model.config.image_token_id)
        self.img_start = int(tok.convert_tokens_to_ids("<img>"))
        self.img_end = int(tok.convert_tokens_to_ids("</img>"))

    def visual_open_close(self, kind: str) -> tuple[list[int], int, list[int]]:
        return [self.img_start], self.image_token, [self.img_end]

    def template_marker(self, kind: str) -> str:
        return "<IMG_CONTEXT>"  # clips are given as images, so never "<video>"

    def encode_images(self, images: Sequence[np.ndarray]) -> list[Visual]:
        proc = self.processor.image_processor(images=list(images), crop_to_patches=False,
                                              return_tensors="pt")
        cfg = self.model.config
        param = next(self.model.parameters())
        pixel_values = proc["pixel_values"].to(param.device, param.dtype)  # [n, 3, S, S]
        feats = self.model.model.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        ).pooler_output  # [n, N, D]
        side = math.isqrt(feats.shape[1])
        return [Visual.full_grid(tokens, (1, side, side)) for tokens in feats]
