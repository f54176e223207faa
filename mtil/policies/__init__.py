"""Expert lifecycle policies, registered by name: none, freeze, merge, grow."""
from . import freeze, grow, merge, none  # noqa: F401,E402  (registration)
from .base import POLICIES, Policy, TrainContext, build, moe_overrides, register  # noqa: F401
