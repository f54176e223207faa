"""Studies over many mtil runs that answer one question each (`mtil study NAME`): `merge`."""
