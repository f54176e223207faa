"""`none`: MoE adapters trained across tasks with no expert management."""
from .base import Policy, register


@register("none")
class NoPolicy(Policy):
    """Plain continual fine-tuning of the adapters (the forgetting baseline)."""
