"""One shape for mtil's plug-in components (policies, plasticity methods): a name -> entry table filled by a class
decorator, with one clear line for an unknown name. (The dataset catalog, `mtil.data.registry`, is a different
thing: records with aliases and user overrides, not classes.)"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import MtilError


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any                                  # the registered class
    meta: dict = field(default_factory=dict)  # what the decorator was given besides the name


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **meta):
        """Class decorator: register the class under `name` with `meta`; a name may be taken once."""
        def deco(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._entries[name] = Entry(name, obj, meta)
            return obj
        return deco

    def named(self, name: str):
        """Class decorator: register the class under `name` and give it `name` as its `.name`."""
        def deco(cls):
            cls.name = name
            return self.register(name)(cls)
        return deco

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise MtilError(f"unknown {self.kind} '{name}'; registered: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
