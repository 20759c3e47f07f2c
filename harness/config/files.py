"""Reading YAML config files safely: ``yaml.SafeLoader`` plus limits on size, nesting,
alias expansion and duplicate keys; errors name the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.config.schema import MAX_CONFIG_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES
from harness.errors import ConfigError, excerpt
from harness.files import read_text_file


class YAMLLimitError(yaml.YAMLError):
    """Well-formed YAML that a run config may not hold: a duplicate key, nesting or alias
    expansion beyond the limits, a value that cannot be built."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also rejects duplicate keys, nesting deeper than
    MAX_YAML_DEPTH, recursive aliases and documents that expand (aliases counted at every
    use) to more than MAX_YAML_NODES values; all of it before any Python object is built."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0  # nesting of the node being composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"nested more than {MAX_YAML_DEPTH} levels deep; a run config needs a few",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        # SafeConstructor trusts explicitly tagged scalars: "!!int x", a 5000-digit int,
        # "!!timestamp 2020-13-45", "!!timestamp nonsense", "!!bool maybe", "!!int ''".
        except (ValueError, OverflowError, AttributeError, LookupError, TypeError) as exc:
            shown = repr(excerpt(node.value, quote=False)) if isinstance(node, yaml.ScalarNode) else node.tag
            raise YAMLLimitError(f"cannot read the value {shown} ({excerpt(str(exc), quote=False)})",
                                 node.start_mark) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, str] = {}  # key -> where it was first given
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with "<<" may be overridden: not duplicates
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first_seen
                except TypeError:
                    continue  # unhashable: SafeLoader reports it
                if seen:
                    raise YAMLLimitError(f"duplicate key {excerpt(key)} (first given at {first_seen[key]}); "
                                         f"give each key once", key_node.start_mark)
                mark = key_node.start_mark
                first_seen[key] = f"line {mark.line + 1}, column {mark.column + 1}"
        return super().construct_mapping(node, deep)


def _check_expansion(root: Any) -> None:
    """Raise YAMLLimitError if the node graph under ``root`` is cyclic, or expanded (each
    alias counted where it is used) exceeds MAX_YAML_NODES nodes or MAX_YAML_DEPTH levels.
    Iterative, and each node is visited once: linear in the document's text."""
    if root is None:
        return
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
    open_: set[int] = set()  # nodes entered and not yet finished: the current path
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finish = stack.pop()
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        if finish:
            size = 1 + sum(done[id(c)][0] for c in children)
            depth = 1 + max((done[id(c)][1] for c in children), default=0)
            if size > MAX_YAML_NODES:
                raise YAMLLimitError(f"expands to more than {MAX_YAML_NODES:,} values (aliases *x repeat what their "
                                     f"anchor &x holds, at every use); a run config needs far fewer", node.start_mark)
            if depth > MAX_YAML_DEPTH:
                raise YAMLLimitError(f"aliases nest values more than {MAX_YAML_DEPTH} levels deep", node.start_mark)
            done[id(node)] = (size, depth)
            open_.discard(id(node))
            continue
        if id(node) in done:
            continue
        if id(node) in open_:
            raise YAMLLimitError("an alias refers to a value that contains it (a recursive structure)", node.start_mark)
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children)


def load_yaml(path: Path) -> Any:
    """Safe-load a config file with :class:`ConfigLoader`; ConfigError on any problem."""
    text = read_text_file(path, "config file", max_bytes=MAX_CONFIG_BYTES)
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader
    except YAMLLimitError as exc:
        where = f":{exc.mark.line + 1}:{exc.mark.column + 1}" if exc.mark is not None else ""
        raise ConfigError(f"{path}{where}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}{where}: malformed YAML: {excerpt(problem, 300, quote=False)}. Fix the syntax at "
                          f"that position (indentation, a missing ':' or an unclosed quote or bracket).") from None
