"""`zero-shot`: CLIP as it was pre-trained, never trained on the stream (the first row of every MTIL table).

Nothing trains and nothing happens between tasks; every row of the accuracy matrix is the zero-shot row
(evaluated once per row from the cached frozen features, `eval.mode: zero-shot`).
"""
from __future__ import annotations

from .base import register
from .finetune import FineTune


@register("zero-shot")
class ZeroShot(FineTune):
    trains = False

    def eval_mode(self, configured: str) -> str:
        return "zero-shot"
