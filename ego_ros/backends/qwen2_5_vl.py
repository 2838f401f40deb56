"""Qwen2.5-VL (and Qwen2-VL, which shares the layout): native video, 3-D multimodal RoPE.

Visual tokens come from ``model.model.get_image_features`` (vision tower + patch merger), one
token per 2x2 merged patch, in row-major order over the merged grid. Positions follow the
model's own ``get_rope_index``: text advances one position per token on all three axes; a
visual block at ``start`` puts token ``(t, r, c)`` at ``(start + t*interval, start + r,
start + c)`` and the next text starts at ``start + max(H, W)``. Concept memories keep the grid
coordinates of the patches they were selected from, so their RoPE phases are the ones the
model saw when it looked at the reference view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ego_ros.backends.base import FamilyAdapter, Visual


class Qwen25VLAdapter(FamilyAdapter):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl", "qwen2_vl")
    uses_3d_positions = True

    def __init__(self, model, processor, max_image_tokens: int | None = None) -> None:
        super().__init__(model, processor, max_image_tokens)
        cfg = model.config
        self.merge = int(cfg.vision_config.spatial_merge_size)
        self.tokens_per_second = float(getattr(cfg.vision_config, "tokens_per_second", 1) or 1)
        tok = self.tokenizer
        self.vision_start = int(cfg.vision_start_token_id)
        self.vision_end = int(getattr(cfg, "vision_end_token_id", None)
                              or tok.convert_tokens_to_ids("<|vision_end|>"))
        self.image_token = int(cfg.image_token_id)
        self.video_token = int(cfg.video_token_id)

    def visual_open_close(self, kind: str) -> tuple[list[int], int, list[int]]:
        pad = self.video_token if kind == "video" else self.image_token
        return [self.vision_start], pad, [self.vision_end]

    def template_marker(self, kind: str) -> str:
        pad = "<|video_pad|>" if kind == "video" else "<|image_pad|>"
        return f"<|vision_start|>{pad}<|vision_end|>"

    def encode_images(self, images: Sequence[np.ndarray]) -> list[Visual]:
        proc = self.processor.image_processor(images=list(images), return_tensors="pt",
                                              **self._size(self.processor.image_processor))
        device = next(self.model.parameters()).device
        pixel_values = proc["pixel_values"].to(device)
        grid_thw = proc["image_grid_thw"].to(device)  # [n, 3] in patches
        feats = self.model.model.get_image_features(pixel_values, grid_thw).pooler_output
        out = []
        for tokens, (t, h, w) in zip(feats, grid_thw.tolist()):  # tokens [N, D]
            out.append(Visual.full_grid(tokens, (t, h // self.merge, w // self.merge)))
        return out

    def encode_clip(self, frames: Sequence[np.ndarray], fps: float = 2.0) -> list[Visual]:
        """A clip as one native video block. Frames are resized to the first frame's size;
        an odd count is padded by the processor to the temporal patch size."""
        h, w = frames[0].shape[:2]
        video = np.stack([f if f.shape[:2] == (h, w) else _resize(f, w, h) for f in frames])
        proc = self.processor.video_processor(videos=[video], return_tensors="pt",
                                              do_sample_frames=False,
                                              **self._size(self.processor.video_processor))
        device = next(self.model.parameters()).device
        pixel_values = proc["pixel_values_videos"].to(device)
        grid_thw = proc["video_grid_thw"].to(device)
        feats = self.model.model.get_video_features(pixel_values, grid_thw).pooler_output
        t, gh, gw = grid_thw[0].tolist()
        temporal_patch = int(self.processor.video_processor.temporal_patch_size)
        interval = self.tokens_per_second * temporal_patch / fps
        return [Visual.full_grid(feats[0], (t, gh // self.merge, gw // self.merge), "video",
                                 interval)]

    def _size(self, processor) -> dict:
        """Processor ``size`` capping one image at ``max_image_tokens`` LLM tokens (each is a
        merged ``(patch * merge)^2`` pixel block); empty to keep the checkpoint's limit."""
        if self.max_image_tokens is None:
            return {}
        size = dict(processor.size)
        block = (int(processor.patch_size) * self.merge) ** 2
        size["longest_edge"] = min(int(size.get("longest_edge") or 1 << 62),
                                   self.max_image_tokens * block)
        size["shortest_edge"] = min(int(size.get("shortest_edge") or 0), size["longest_edge"])
        return {"size": size}

    def visual_positions(self, block: Visual, start: int) -> tuple[torch.Tensor, int]:
        coords = block.coords  # [N, 3]
        t = (coords[:, 0].double() * block.time_interval).long() + start
        pos = torch.stack([t, coords[:, 1] + start, coords[:, 2] + start])  # [3, N]
        # transformers' get_rope_index continues text at start + max(H, W); a long clip's
        # temporal positions can pass that, so never continue below the block's last one.
        span = max(block.grid[1], block.grid[2])
        if block.grid[0] > 1:
            span = max(span, int((block.grid[0] - 1) * block.time_interval) + 1)
        return pos, start + span


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
