"""Expert lifecycle policies, registered by name: none, freeze, merge, grow."""
from . import freeze, grow, merge, none  # noqa: F401,E402  (registration)
from .base import POLICIES, Policy, RunFacts, TrainContext, build, register  # noqa: F401
