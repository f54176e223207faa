"""mtil: multi-domain task-incremental learning with CLIP and MoE adapters."""
__version__ = "0.3.0"
