"""The adapted model: the frozen CLIP backbone, the mixture-of-experts adapters attached to its blocks, and the
usage records read from them."""

TOWERS = ("image", "text")   # CLIP's two encoders, the order every per-tower record uses
