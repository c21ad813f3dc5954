"""Reading config YAML without trusting it: a safe loader that refuses what `yaml.safe_load`
lets through, so that a hostile or careless file fails fast with one line naming the key.

`yaml.safe_load` keeps the last of two equal keys without a word, recurses once per level of
nesting (thousands of levels end in a RecursionError), builds 10**100000-digit integers (or
dies converting them), and expands aliases into structures far larger than the file. The
loader here refuses duplicate keys (naming the key and both lines), nesting deeper than
`MAX_DEPTH`, more than `MAX_VALUES` values (aliases counted each time they are used), strings
longer than `MAX_STRING`, numbers longer than `MAX_NUMBER_CHARS` characters or not finite, and
files larger than `MAX_CONFIG_BYTES`. Events come from libyaml where it is installed (fast, not
recursive); nodes are composed in Python, where the depth can be counted.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from steer.errors import ConfigError

MAX_CONFIG_BYTES = 1_000_000
MAX_DEPTH = 64
MAX_VALUES = 100_000  # scalars, lists and mappings together
MAX_STRING = 100_000  # characters in one string
MAX_NUMBER_CHARS = 40  # characters of one number as written (int or float)

try:  # libyaml's event parser: ~5x faster than the pure-Python one, and not recursive either
    from yaml._yaml import CParser as _Parser

    def _init_parser(loader, text: str) -> None:
        _Parser.__init__(loader, text)
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser):  # type: ignore[no-redef]
        """PyYAML's own reader, scanner and (event-based, non-recursive) parser."""

    def _init_parser(loader, text: str) -> None:
        Reader.__init__(loader, text)
        Scanner.__init__(loader)
        Parser.__init__(loader)


def path_str(parts: tuple | list) -> str:
    """A key path as the config's messages write it: `steering.layers[0]`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(path: tuple) -> str:
    """A key path for a message, cut short when a deep or self-referencing value makes it long."""
    return path_str(path) if len(path) <= 8 else path_str(path[:4]) + f"...({len(path)} deep)"


def _line(node_or_event) -> int:
    mark = getattr(node_or_event, "start_mark", None)
    return mark.line + 1 if mark is not None else 0


class ConfigLoader(_Parser, SafeConstructor, Resolver):
    """yaml's SafeLoader, but strict: see the module's docstring. `source` names the file in
    messages."""

    # Python's composer (libyaml's own recurses in C, where no limit can be counted)
    get_single_node = Composer.get_single_node
    compose_document = Composer.compose_document
    compose_scalar_node = Composer.compose_scalar_node
    compose_sequence_node = Composer.compose_sequence_node
    compose_mapping_node = Composer.compose_mapping_node

    def __init__(self, text: str, source: str, prefix: tuple = ()):
        _init_parser(self, text)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.anchors: dict = {}
        self.source = source
        self.prefix = prefix  # where the text goes in a config (a --set value's key path)
        self._depth = 0
        self._nodes = 0
        self._paths: dict[int, tuple] = {}  # id(node) -> key path, for messages

    def _fail(self, where: tuple | int, given: Any, expected: str):
        path = _short(where) if isinstance(where, tuple) else f"line {where}"
        raise ConfigError(self.source, path, given, expected)

    def compose_node(self, parent, index):
        # Composer.compose_node recurses once per level: stop long before Python's limit.
        event = self.peek_event()
        self._nodes += 1
        if self._nodes > MAX_VALUES:
            self._fail(_line(event), f"more than {MAX_VALUES:,} values",
                       f"a config of at most {MAX_VALUES:,} values")
        if self._depth >= MAX_DEPTH and not isinstance(event, yaml.AliasEvent) \
                and isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self._fail(_line(event), f"nesting deeper than {MAX_DEPTH} levels",
                       f"at most {MAX_DEPTH} levels of nesting")
        self._depth += 1
        try:
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1

    def _where(self, node, key=None) -> tuple:
        path = self._paths.get(id(node), self.prefix)
        return path if key is None else (*path, key)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class refuses unhashable keys with its own error
                if key in seen:
                    self._fail(self._where(node, key), key,
                               f"each key once in a mapping (line {seen[key]} sets it, line "
                               f"{_line(key_node)} again)")
                seen[key] = _line(key_node)
                self._paths.setdefault(id(value_node), self._where(node, key))
        return super().construct_mapping(node, deep)

    def construct_sequence(self, node, deep=False):
        for i, child in enumerate(getattr(node, "value", [])):
            self._paths.setdefault(id(child), self._where(node, i))
        return super().construct_sequence(node, deep)

    def _scalar_number(self, node, build):
        text = self.construct_scalar(node)
        if len(text) > MAX_NUMBER_CHARS:
            self._fail(self._where(node), f"a number of {len(text):,} characters",
                       f"a number of at most {MAX_NUMBER_CHARS} characters")
        return build(self, node)

    def construct_int(self, node):
        return self._scalar_number(node, SafeConstructor.construct_yaml_int)

    def construct_float(self, node):
        return self._scalar_number(node, SafeConstructor.construct_yaml_float)


ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_int)
ConfigLoader.add_constructor("tag:yaml.org,2002:float", ConfigLoader.construct_float)


def load_yaml(text: str, source: str, prefix: tuple = ()) -> Any:
    """Parse YAML text strictly; ConfigError (one line naming the key or line) for anything the
    loader refuses, yaml.YAMLError for text that is not YAML. `prefix`: the key path the text
    is the value of (a `--set` override), for messages.

    Example:
        >>> load_yaml("a: [1, 2]", "x.yaml")
        {'a': [1, 2]}
        >>> try:
        ...     load_yaml("name: a\\nname: b\\n", "x.yaml")
        ... except ConfigError as e:
        ...     print(e)
        x.yaml: name: got 'name', expected each key once in a mapping (line 1 sets it, line 2 again)
    """
    loader = ConfigLoader(text, source, prefix)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    check_values(data, source, prefix)
    return data


def check_values(data: Any, source: str, prefix: tuple = ()) -> None:
    """Refuse structures too large, too deep, or holding values no config needs (strings over
    MAX_STRING characters, numbers that are not finite or have too many digits); aliases count
    each time they are used, so a small file cannot expand into a huge config. Iterative: a
    self-referencing alias stops at MAX_VALUES instead of recursing.

    Example:
        >>> check_values({"seeds": [0, 1]}, "x.yaml")
        >>> try:
        ...     check_values({"steering": {"scales": [float("inf")]}}, "x.yaml")
        ... except ConfigError as e:
        ...     print(e)
        x.yaml: steering.scales[0]: got inf, expected a finite number
    """
    stack: list[tuple[Any, tuple]] = [(data, prefix)]
    count = 0
    while stack:
        value, path = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(source, _short(path), f"more than {MAX_VALUES:,} values",
                              f"a config of at most {MAX_VALUES:,} values (aliases counted "
                              "each time they are used)")
        if len(path) - len(prefix) > MAX_DEPTH:
            raise ConfigError(source, _short(path),
                              f"nesting deeper than {MAX_DEPTH} levels",
                              f"at most {MAX_DEPTH} levels of nesting")
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and len(k) > MAX_STRING:
                    raise ConfigError(source, path_str(path), k, "a key of reasonable length")
                stack.append((v, (*path, k)))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if abs(value) >= 10 ** (MAX_NUMBER_CHARS - 1):
                raise ConfigError(source, path_str(path), f"a {len(str(abs(value)))}-digit number"
                                  if abs(value) < 10 ** 4000 else "a number of over 4,000 digits",
                                  f"a number of at most {MAX_NUMBER_CHARS - 1} digits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ConfigError(source, path_str(path), value, "a finite number")
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                raise ConfigError(source, path_str(path), f"a string of {len(value):,} characters",
                                  f"a string of at most {MAX_STRING:,} characters")
