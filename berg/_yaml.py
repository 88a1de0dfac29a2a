"""YAML that cannot explode: cards, jobs and dataset specs come from other people.

:func:`parse_yaml` refuses aliases (``*name``), so a small file cannot expand into an exponentially large value (a
"billion laughs" document), and refuses documents over :data:`MAX_YAML_BYTES` or nested deeper than Python can
build. Anchors alone (``&name``) are harmless and allowed. Every refusal is an
:class:`~berg.errors.UnsafeYamlError`, which the caller turns into its own typed error naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import UnsafeYamlError

#: the largest card, job or spec file read (1 MiB; the packaged cards are a few KB)
MAX_YAML_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing aliases before they are expanded."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise UnsafeYamlError(f"uses a YAML alias (*name) at line {mark.line + 1}; aliases are not allowed "
                                  "(write the value out)")
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Any:
    """The value of one YAML document (safe types only, no aliases).

    Raises
    ------
    UnsafeYamlError
        Over :data:`MAX_YAML_BYTES`, an alias, nesting too deep, or not YAML.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise UnsafeYamlError(f"is larger than {MAX_YAML_BYTES} bytes, the most berg reads")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError as exc:
        raise UnsafeYamlError("is nested too deeply to read") from exc
    except yaml.YAMLError as exc:
        raise UnsafeYamlError(f"is not valid YAML: {exc}") from exc


def check_file_size(path: str | os.PathLike) -> None:
    """Refuse a card, job or spec file over :data:`MAX_YAML_BYTES` before reading it (:class:`UnsafeYamlError`)."""
    size = Path(path).stat().st_size
    if size > MAX_YAML_BYTES:
        raise UnsafeYamlError(f"is {size} bytes, larger than {MAX_YAML_BYTES}, the most berg reads")


def read_yaml(path: str | os.PathLike) -> Any:
    """:func:`parse_yaml` of a file, refusing one over :data:`MAX_YAML_BYTES` before reading it.

    Raises
    ------
    UnsafeYamlError
        As :func:`parse_yaml`. OSError: the file cannot be read.
    """
    check_file_size(path)
    return parse_yaml(Path(path).read_text())
