"""Split files: open-set splits defined in a small YAML or JSON file (``--split-file``).

Every error names the file and line of the entry to fix, which is why the file is read as YAML *nodes*
(they carry line marks) rather than as plain data. JSON is the one wrinkle: YAML readers refuse the tabs
that JSON allows as indentation, so JSON is checked with :mod:`json` first (see :func:`_compose`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from attrib.data.catalog import REAL, text_lines
from attrib.data.splits import Split, SplitError, check_split


def load_split_file(path: str | os.PathLike) -> dict[str, Split]:
    """Splits from a small YAML or JSON file; errors name the file and line.

    Format (``real`` is always class 0 and need not be listed)::

        splits:                      # optional top-level key
          A:
            known: [gen1, gen2]      # label order: real = 0, gen1 = 1, gen2 = 2
            unknown: [gen3, gen4]

    Unknown generators may come in named groups, each reported on its own besides ``all``::

          B:
            known: [gen1]
            unknown: {seed: [gen2, gen3], arch: [gen4]}     # all = gen2, gen3, gen4

    The paper's own config keys are accepted too (``known_classes`` with ``real`` first, and
    ``unknown_classes`` as a list, as ``{all: [...]}``, or as groups with ``all`` listing every unknown
    generator), and its other keys (``data_path``, collections, annotation paths) are ignored, so its
    ``configs/data/genimage.yaml``, ``osma.yaml`` and ``diffusionforensics.yaml`` read as they are.
    JSON is read as JSON (see :func:`_compose`), so tab-indented JSON works too.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SplitError(f"--split-file {path!r} does not exist")
    root = _compose(path)
    if root is None:
        raise SplitError(f"{path}: empty split file")
    entries = _mapping(path, root, "the split file")
    if len(entries) == 1 and entries[0][0].value == "splits":
        entries = _mapping(path, entries[0][1], "'splits'")
    splits: dict[str, Split] = {}
    for key, body in entries:
        name = str(key.value).strip()
        if name in splits:
            raise SplitError(f"{_at(path, key)}: split {name!r} defined twice")
        splits[name] = _split(path, name, key, body)
    if not splits:
        raise SplitError(f"{path}: no splits defined")
    return splits


def _split(path: str, name: str, key: yaml.Node, body: yaml.Node) -> Split:
    """One split's entry (``key``: the node of its name, ``body``: its mapping), checked."""
    fields = {k.value: v for k, v in _mapping(path, body, f"split {name!r}")}
    known_key = next((k for k in ("known", "known_classes") if k in fields), None)
    unknown_key = next((k for k in ("unknown", "unknown_classes") if k in fields), None)
    if known_key is None or unknown_key is None:
        raise SplitError(f"{_at(path, key)}: split {name!r} needs 'known' and 'unknown' lists")
    known = _names(path, fields[known_key], f"split {name!r} {known_key}")
    if REAL in known:
        if known[0] != REAL:
            raise SplitError(f"{_at(path, fields[known_key])}: split {name!r}: '{REAL}' must come first (label 0) "
                             f"or not be listed")
        known = known[1:]
    unknown, groups = _unknown(path, fields[unknown_key], f"split {name!r} {unknown_key}")
    sp = Split(name, known, unknown, _at(path, key), groups)
    check_split(sp)
    return sp


def _at(path: str, node: yaml.Node) -> str:
    """``file:line`` of a node (just the file for nodes built from JSON without line marks)."""
    return f"{path}:{node.start_mark.line + 1}" if node.start_mark is not None else path


def _mapping(path: str, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise SplitError(f"{_at(path, node)}: {what} must be a mapping (name: value)")
    return node.value


def _unknown(path: str, node: yaml.Node,
             what: str) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """(unknown generators, named groups) of a split's unknown entry: a list (one group), or a mapping
    of group name to list. ``all``, when given, lists every unknown generator (the paper's OSMA config
    repeats the groups in it) and must hold every group's members; without it the unknown generators are
    the groups' members in file order."""
    if not isinstance(node, yaml.MappingNode):
        return _names(path, node, what), ()
    groups: list[tuple[str, tuple[str, ...]]] = []
    everything = None
    for k, v in node.value:
        group = str(k.value).strip()
        if any(g == group for g, _ in groups) or (group == "all" and everything is not None):
            raise SplitError(f"{_at(path, k)}: {what}: group {group!r} listed twice")
        members = _names(path, v, f"{what} {group}")
        if group == "all":
            everything = members
        else:
            groups.append((group, members))
    if everything is None:
        everything = tuple(dict.fromkeys(m for _, members in groups for m in members))
    else:
        stray = [m for _, members in groups for m in members if m not in everything]
        if stray:
            raise SplitError(f"{_at(path, node)}: {what}: {', '.join(dict.fromkeys(stray))} in a group but not "
                             f"in 'all'; 'all' must list every unknown generator")
    return everything, tuple(groups)


def _names(path: str, node: yaml.Node, what: str) -> tuple[str, ...]:
    """Source names of a list node."""
    if not isinstance(node, yaml.SequenceNode):
        raise SplitError(f"{_at(path, node)}: {what} must be a list of source names, e.g. [gen1, gen2]")
    out = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or not str(item.value).strip():
            raise SplitError(f"{_at(path, item)}: {what}: each entry must be a source name")
        out.append(str(item.value).strip())
    return tuple(out)


def _compose(path: str) -> yaml.Node | None:
    """The node tree of a YAML or JSON split file (line numbers kept for errors), or None when empty.

    YAML readers refuse tabs as indentation, which JSON allows, so a file that claims to be JSON (named
    ``.json``, or starting with ``{`` or ``[``) is checked with :mod:`json` first: in a ``.json`` file a
    syntax error names its line and column as a JSON error; other files that are not JSON are read as
    YAML. In valid JSON a literal tab can only be whitespace between tokens (tabs in strings must be
    escaped), so the text with tabs turned into spaces means the same and the YAML composer gives its
    nodes with their lines. JSON that YAML still refuses (raw control characters such as DEL in a string)
    falls back to nodes built from the decoded JSON, without line numbers.
    """
    text = "".join(line + "\n" for _, line in text_lines(path, SplitError))
    is_json = path.lower().endswith(".json")
    if is_json or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text, object_pairs_hook=_JsonObject)
        except json.JSONDecodeError as exc:
            if is_json:
                raise SplitError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        else:
            try:
                return yaml.compose(text.replace("\t", " "))
            except yaml.YAMLError:
                return _json_nodes(data)
    try:
        return yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SplitError(f"{path}{f':{mark.line + 1}' if mark is not None else ''}: not valid YAML/JSON: "
                         f"{getattr(exc, 'problem', None) or exc}") from None


class _JsonObject(list):
    """A decoded JSON object as its (key, value) pairs in file order, duplicates kept (they are errors)."""


def _json_nodes(data: Any) -> yaml.Node:
    """YAML nodes, without line marks, for JSON decoded with ``object_pairs_hook=_JsonObject``."""
    if isinstance(data, _JsonObject):
        return yaml.MappingNode("tag:yaml.org,2002:map", [(_json_nodes(k), _json_nodes(v)) for k, v in data])
    if isinstance(data, list):
        return yaml.SequenceNode("tag:yaml.org,2002:seq", [_json_nodes(x) for x in data])
    return yaml.ScalarNode("tag:yaml.org,2002:str", "" if data is None else str(data))


__all__ = ["load_split_file"]
