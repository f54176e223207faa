"""The adapted model: the frozen CLIP backbone, the mixture-of-experts adapters attached to its blocks, and the
usage records read from them."""
