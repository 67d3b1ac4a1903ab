"""YAML reading shared by model cards and QC specs: PyYAML's safe loader, refusing duplicate keys.

A repeated key in a mapping (two ``postprocess:`` blocks in a card, two ``grains:`` blocks in a spec) would
otherwise make the second silently replace the first.
"""

from __future__ import annotations

from typing import Any


class DuplicateKeyError(ValueError):
    """A YAML mapping names the same key twice (the second would silently replace the first)."""


def unique_key_loader() -> type:
    r"""A ``yaml.SafeLoader`` that refuses duplicate keys in a mapping.

    Examples
    --------
    >>> import yaml
    >>> try:
    ...     yaml.load("a:\n  x: 1\na:\n  y: 2\n", Loader=unique_key_loader())
    ... except ValueError as exc:
    ...     print(exc)
    a: duplicate key (line 3; first at line 1): merge the two blocks
    """
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # noqa: ANN001, ANN202 - yaml's signature
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:  # unhashable key: let yaml report it
                        continue
                    if first is not None:
                        raise DuplicateKeyError(f"{key}: duplicate key (line {key_node.start_mark.line + 1}; "
                                                 f"first at line {first}): merge the two blocks")
                    seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` on a repeated key."""
    import yaml

    return yaml.load(text, Loader=unique_key_loader())  # noqa: S506 - a SafeLoader subclass
