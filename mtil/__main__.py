"""`python -m mtil` (and `accelerate launch -m mtil run ...`)."""
import sys

from .cli import main

sys.exit(main())
