"""The run directory: its layout, torch-free atomic writers (`files`), readers (`read`) and the claim a writer
holds on it (`claim`: no foreign files, one writer at a time)."""
from .read import RunRecord, find_runs, load_run, read_config, read_results

__all__ = ["RunRecord", "find_runs", "load_run", "read_config", "read_results"]
