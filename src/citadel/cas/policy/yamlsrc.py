"""YAML to plain data, remembering where each value was written (for errors that point at lines).

Safe loading only (no Python objects), duplicate keys refused (PyYAML silently keeps the last),
keys must be strings, and aliases are bounded so a small document cannot expand into a huge one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Dict, Tuple, Union

import yaml

Path = Tuple[Union[str, int], ...]
MAX_BYTES = 1024 * 1024
MAX_NODES = 100_000
LONG_NUMBER = 16  # plain scalars this long that look numeric are kept as text (hashes, measurements)


@dataclass(frozen=True)
class Located:
    """A problem at a place in the source: 1-based line and column."""

    line: int
    column: int
    message: str


class YamlProblem(Exception):
    def __init__(self, where: Located) -> None:
        super().__init__(where.message)
        self.where = where


def _at(node: yaml.Node) -> Tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    def __init__(self) -> None:
        self.marks: Dict[Path, Tuple[int, int]] = {}
        self.count = 0
        self.constructor = yaml.SafeLoader("")  # used only to resolve scalars (int, bool, null...)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlProblem(Located(*_at(node), "document too large after expanding aliases"))
        self.marks.setdefault(path, _at(node))
        if isinstance(node, yaml.MappingNode):
            out: Dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    raise YamlProblem(Located(*_at(key_node), "keys must be plain strings"))
                key = self.constructor.construct_object(key_node)
                if not isinstance(key, str):
                    key = str(key) if isinstance(key, (int, bool)) else None
                    if key is None:
                        raise YamlProblem(Located(*_at(key_node), "keys must be plain strings"))
                if key in out:
                    raise YamlProblem(Located(*_at(key_node), f"duplicate key {key!r}"))
                self.marks[path + (key,)] = _at(key_node)  # errors about a member point at its key
                out[key] = self.build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        try:
            value = self.constructor.construct_object(node)
        except yaml.YAMLError as exc:
            raise YamlProblem(Located(*_at(node), f"unsupported value: {exc}")) from None
        if isinstance(value, (dt.datetime, dt.date)):
            return node.value  # keep the text; no field of a policy is a date
        if isinstance(value, (int, float)) and not isinstance(value, bool) and len(node.value) >= LONG_NUMBER:
            return node.value  # an unquoted hash or measurement made only of digits stays text
        if isinstance(value, bytes):
            raise YamlProblem(Located(*_at(node), "binary (!!binary) values are not supported; use base64 text"))
        if isinstance(value, float) and value != value:
            raise YamlProblem(Located(*_at(node), "NaN is not a valid value"))
        return value


def load(text: str) -> Tuple[Any, Dict[Path, Tuple[int, int]]]:
    """Parse one YAML document; return (data, marks) or raise YamlProblem."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlProblem(Located(1, 1, f"the policy is larger than {MAX_BYTES // 1024} KiB"))
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlProblem(Located(line, column, f"YAML syntax: {exc.problem or exc.context}")) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(Located(1, 1, f"YAML syntax: {exc}")) from None
    if node is None:
        raise YamlProblem(Located(1, 1, "the policy is empty"))
    builder = _Builder()
    data = builder.build(node, ())
    return data, builder.marks


def where(marks: Dict[Path, Tuple[int, int]], path: Path) -> Tuple[int, int]:
    """The mark of `path`, or of its nearest ancestor that has one."""
    probe = tuple(path)
    while probe not in marks and probe:
        probe = probe[:-1]
    return marks.get(probe, (1, 1))


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def pointer(path: Path) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)
