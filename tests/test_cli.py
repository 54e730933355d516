"""The command line: `cnn-ablate COMMAND` (service.cli.main and the installed script) reaches
every command, and every entry point answers a bad flag with one line on stderr and exit code 2
(service.cli.Exit.BAD_INPUT)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from service import cli
from service.cli import Exit

SCRIPT = Path(sysconfig.get_path("scripts")) / "cnn-ablate"
BAD_FLAG = "--no-such-flag"


def _run_all(commands: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run the commands side by side (each imports its own layer, some torch) and wait."""
    procs = {name: subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, argv in commands.items()}
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = subprocess.CompletedProcess(commands[name], proc.returncode, out, err)
    return done


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_cnn_ablate_dispatches_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == Exit.OK
    assert capsys.readouterr().out.startswith(f"usage: cnn-ablate {command}")


def test_cnn_ablate_help_lists_every_command(capsys) -> None:
    assert cli.main(["--help"]) == Exit.OK
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in cli.COMMANDS), out


@pytest.mark.parametrize("argv", [["bogus"], [], ["--verbose"]])
def test_a_missing_or_unknown_command_is_one_line_and_exit_2(argv, capsys) -> None:
    assert cli.main(argv) == Exit.BAD_INPUT
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(("cnn-ablate: unknown command", "usage: cnn-ablate"))


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_a_bad_flag_is_one_line_and_exit_2(command: str, capsys) -> None:
    module = importlib.import_module(cli.COMMANDS[command])
    with pytest.raises(SystemExit) as stop:
        module.main([BAD_FLAG])
    assert stop.value.code == Exit.BAD_INPUT
    assert _one_line(capsys.readouterr().err).startswith(f"python -m service.{command}: ")
    # Dispatched, the line names the command as it was typed.
    with pytest.raises(SystemExit) as stop:
        cli.main([command, BAD_FLAG])
    assert stop.value.code == Exit.BAD_INPUT
    assert _one_line(capsys.readouterr().err).startswith(f"cnn-ablate {command}: ")


@pytest.mark.slow  # one interpreter per entry point
def test_every_python_m_entry_point_answers_a_bad_flag(tmp_path: Path) -> None:
    runs = _run_all({name: [sys.executable, "-m", f"service.{name}", BAD_FLAG]
                     for name in cli.COMMANDS}, tmp_path)
    for name, proc in runs.items():
        assert proc.returncode == Exit.BAD_INPUT, (name, proc.stderr[-3000:])
        line = _one_line(proc.stderr)
        assert line.startswith(f"python -m service.{name}: "), (name, line)


@pytest.mark.slow  # one interpreter per command
def test_the_installed_script_dispatches_every_command(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: reinstall (pip install -e '.[test]')"
    runs = _run_all({name: [str(SCRIPT), name, "--help"] for name in cli.COMMANDS}, tmp_path)
    for name, proc in runs.items():
        assert proc.returncode == Exit.OK, (name, proc.stderr[-3000:])
        assert proc.stdout.startswith(f"usage: cnn-ablate {name}"), (name, proc.stdout[:300])
    unknown = subprocess.run([str(SCRIPT), "bogus"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert unknown.returncode == Exit.BAD_INPUT
    assert "bogus" in _one_line(unknown.stderr)
    bad = subprocess.run([str(SCRIPT), "submit", BAD_FLAG], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == Exit.BAD_INPUT
    assert _one_line(bad.stderr).startswith("cnn-ablate submit: ")
