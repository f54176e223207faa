"""Datasets: the MTIL registry (class names, templates), the prepared on-disk format, the demo stream."""
