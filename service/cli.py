"""What every entry point shares: one argument parser, one table of exit codes, and the
`cnn-ablate` command that dispatches to them (`cnn-ablate submit ...` = `python -m
service.submit ...`). Imports nothing heavy: each command loads its own layer."""

from __future__ import annotations

import argparse
import importlib
import sys
from enum import IntEnum


class Exit(IntEnum):
    """Exit codes of every entry point (docs/reliability.md, README)."""

    OK = 0
    DIVERGED = 1  # service.train: the run diverged (non-finite loss)
    BAD_INPUT = 2  # a bad flag, space, file or directory: nothing started
    TRIALS_FAILED = 3  # the sweep finished but some trials diverged or failed
    WRITE_FAILED = 4  # results could not be written; finished work is kept
    REGRESSION = 5  # nightly: the best metric regressed beyond the tolerance
    INTERRUPTED = 130  # Ctrl-C; resume with --resume


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(Exit.BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


# How the running command was invoked, for its usage lines: `cnn-ablate COMMAND` while main()
# dispatches, else the module's own name.
_prog = "python -m service.{}"


def parser(command: str, doc: str | None) -> Parser:
    """The parser of `python -m service.<command>` (or `cnn-ablate <command>`), its module
    docstring as the description."""
    return Parser(prog=_prog.format(command), description=doc,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def say_problems(problems: list[str]) -> int:
    """Print one line per problem on stderr; the bad-input exit code."""
    for problem in problems:
        print(problem, file=sys.stderr)
    return Exit.BAD_INPUT


COMMANDS = {  # cnn-ablate COMMAND -> the module whose main() runs it
    "submit": "service.submit", "train": "service.train", "report": "service.report.__main__",
    "analyze": "service.analyze", "claims": "service.claims.__main__",
    "schedule": "service.schedule", "models": "service.models.__main__",
}


def main(argv: list[str] | None = None) -> int:
    """`cnn-ablate COMMAND [args]`: the same as `python -m service.COMMAND [args]`; a missing or
    unknown COMMAND is one line on stderr and exit code 2."""
    global _prog
    argv = sys.argv[1:] if argv is None else argv
    usage = f"usage: cnn-ablate {{{'|'.join(COMMANDS)}}} [args]  (each: cnn-ablate COMMAND --help)"
    if argv[:1] in (["-h"], ["--help"]):
        print(usage)
        for name, module in COMMANDS.items():
            print(f"  {name:<9} python -m {module.removesuffix('.__main__')}")
        return Exit.OK
    if not argv:
        print(usage, file=sys.stderr)
        return Exit.BAD_INPUT
    if argv[0] not in COMMANDS:
        print(f"cnn-ablate: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)} "
              "(see --help)", file=sys.stderr)
        return Exit.BAD_INPUT
    command = importlib.import_module(COMMANDS[argv[0]])
    _prog, saved = "cnn-ablate {}", _prog
    try:
        return int(command.main(argv[1:]) or Exit.OK)
    finally:
        _prog = saved


if __name__ == "__main__":
    raise SystemExit(main())
