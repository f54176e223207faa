"""Label matching shared by the sources: source class names (folders, torchvision's or the hub's label names)
mapped by *name* onto a registered dataset's label order; class-name normal forms."""
from __future__ import annotations

import re
from typing import Sequence

from ...errors import MtilError
from .. import registry


def norm(s: str) -> str:
    """Comparison form of a class name: lower case, punctuation and `_` as single spaces."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(s).lower()).split())


def clean_classname(s: str) -> str:
    """A folder / source class name as a prompt-ready class name (`golden_retriever` -> `golden retriever`)."""
    return " ".join(str(s).replace("_", " ").replace("/", " ").split())


class LabelMatcher:
    """Maps source class names (folder paths, torchvision/HF label names) onto a registered dataset's labels."""

    def __init__(self, name: str):
        self.name = registry.resolve(name)
        info = registry.get(self.name)
        self.classnames = info.classnames
        self.keys: dict[str, int] = {}
        sources = registry.source_names(self.name) or []
        aliases = registry.class_aliases(self.name)
        sets = list(registry.name_sets(self.name).values())
        for i, c in enumerate(info.classnames):
            for form in [c, *(s[i] for s in sets), *(sources[i:i + 1]), *aliases.get(c, [])]:
                self.keys.setdefault(norm(form), i)
        self.ignored = {norm(x) for x in registry.ignore_folders(self.name)}

    def candidates(self, source_name: str) -> list[str]:
        """Forms tried for a (possibly nested) source name: the whole path, then shorter and shorter suffixes."""
        parts = [p for p in re.split(r"[\\/]", str(source_name)) if p]
        if len(parts) > 1 and parts[-1].lower() == "images":
            parts = parts[:-1]
        forms = [" ".join(parts[i:]) for i in range(len(parts))]
        if len(parts) > 1:
            forms.append(parts[0])
        return forms or [str(source_name)]

    def is_ignored(self, source_name: str) -> bool:
        return any(norm(f) in self.ignored for f in self.candidates(source_name))

    def match(self, source_name: str) -> int | None:
        for form in self.candidates(source_name):
            i = self.keys.get(norm(form))
            if i is not None:
                return i
        return None

    def map(self, source_names: Sequence[str], what: str, index_base: int = 0) -> list[int]:
        """Registry label of every source name; numeric names are label indices (`index_base` 0 or 1)."""
        out, unmatched = [], []
        n = len(self.classnames)
        for s in source_names:
            i = self.match(s)
            if i is None:
                last = self.candidates(s)[-1] if self.candidates(s) else str(s)
                if str(last).strip().isdigit():
                    i = int(str(last).strip()) - index_base
                    if not 0 <= i < n:
                        hint = "; pass --index-base 1 for 1-based folders" if i == n and index_base == 0 else ""
                        raise MtilError(f"{what}: '{s}' is label index {i}, outside 0..{n - 1} of {self.name}{hint}")
                else:
                    unmatched.append(str(s))
            out.append(i)
        if unmatched:
            examples = ", ".join(f"'{c}'" for c in self.classnames[:3])
            raise MtilError(f"{what}: {len(unmatched)} class name(s) are not {self.name} classes: "
                            f"{', '.join(repr(u) for u in unmatched[:5])}{' ...' if len(unmatched) > 5 else ''}; "
                            f"name class folders by class name ({examples}, ...) or label index")
        return out
