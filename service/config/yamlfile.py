"""Reading a sweep spec's YAML safely: no aliases, no duplicate keys, bounded size, and
every failure one `SpecError` line (never a traceback)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from service.config.base import SpecError, problem
from service.config.blocks import MAX_FILE_BYTES


class _SpecLoader(yaml.SafeLoader):
    """safe_load, plus: aliases refused (no alias bombs; a spec is small enough to write out),
    duplicate keys refused (PyYAML keeps the last one silently), and `1e-3` read as a float
    (YAML 1.1 wants `1.0e-3`, so PyYAML would hand the float fields a string)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed in a sweep spec",
                event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key.value!r}", key.start_mark)
                seen.add(key.value)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml(path: Path, source: str) -> Any:
    """The YAML document at `path`; a SpecError (one line, naming `source`) on any failure."""
    def fail(where: str, value: Any, why: str) -> SpecError:
        return SpecError([f"{source}: {problem(where, value, why)}"])

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise fail("<file>", f"<{path.stat().st_size} bytes>", "a spec is at most 1 MiB")
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded even where the size lied (a pipe)
    except FileNotFoundError:
        raise fail("<file>", "<missing>", "no such file") from None
    except OSError as err:
        raise fail("<file>", "<unreadable>", err.strerror or str(err)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise fail("<file>", "<over 1 MiB>", "a spec is at most 1 MiB")
    try:
        return yaml.load(raw.decode("utf-8"), Loader=_SpecLoader)  # noqa: S506 (safe loader)
    except UnicodeDecodeError as err:
        raise fail(f"byte {err.start}", f"<0x{raw[err.start]:02x}>",
                   "not UTF-8 text; a spec is a YAML file") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        lines = mark.buffer.splitlines() if mark and mark.buffer else []
        line = lines[mark.line].strip() if mark and mark.line < len(lines) else "end of file"
        raise fail(f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<yaml>",
                   f"<{line}>", f"not valid YAML: {err.context or ''} {err.problem}") from None
    except yaml.YAMLError as err:
        raise fail("<yaml>", "<text>", f"not valid YAML: {err}") from None
    except RecursionError:
        raise fail("<yaml>", "<text>", "nested too deeply") from None


