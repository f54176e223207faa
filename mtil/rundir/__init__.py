"""The run directory: its layout, torch-free atomic writers (`files`) and readers (`read`)."""
from .read import RunRecord, find_runs, load_run, read_config, read_results

__all__ = ["RunRecord", "find_runs", "load_run", "read_config", "read_results"]
