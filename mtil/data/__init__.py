"""Datasets: the catalog of class names and templates (`registry`, `catalog/`), the prepared on-disk format
(`prepared/`), converters from a dataset's usual sources (`sources/`), and the loaders that batch it (`pipeline`)."""
