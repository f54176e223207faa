"""Expert lifecycle policies, registered by name: none, freeze, merge, grow."""
from .base import POLICIES, Policy, TrainContext, build, moe_overrides, register  # noqa: F401
from . import none, freeze, merge, grow  # noqa: F401,E402  (registration)
