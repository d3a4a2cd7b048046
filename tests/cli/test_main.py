"""The command table, help texts, global flags, and one run of the installed console script."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from nanprobe.cli import main as cli_main
from tests.cli.conftest import Files
from tests.cli.helpers import one_error_line, run_cli


def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: nanprobe")
    for text in ("trace", "scan", "exit status", "1  something non-finite was found", "examples:"):
        assert text in out


@pytest.mark.parametrize(("command", "texts"), [
    ("trace", ["--model MODULE:CALLABLE", "--batches FILE", "--mode {eval,train}", "--backward", "--json FILE",
               "--trust-pickle", "--device DEVICE", "--data MODULE:CALLABLE", "--config FILE", "--repro DIR",
               "--debug", "--no-color", "exit status:", "examples:", "model(**b)"]),
    ("scan", ["--json FILE", "--top N", "--trust-pickle", "exit status:", "1  at least one tensor holds NaN/Inf"]),
])
def test_command_help(capsys: pytest.CaptureFixture[str], command: str, texts: list[str]) -> None:
    assert cli_main.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for text in texts:
        assert text in out, text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from nanprobe._version import __version__

    assert cli_main.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nanprobe {__version__}"


def test_no_command_is_a_one_line_error() -> None:
    r = run_cli()
    assert r.code == 2
    assert one_error_line(r).startswith("nanprobe: error: no command given; choose one of trace, scan")
    assert r.out == ""


def test_missing_command_modules_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli_main.COMMANDS, "later", "nanprobe.cli.cmd_not_written_yet")
    loaded = cli_main.load_commands()
    assert "later" not in loaded
    assert {"trace", "scan"} <= set(loaded)
    for name in ("report", "replay", "demo"):
        try:
            __import__(cli_main.COMMANDS[name])
        except ModuleNotFoundError:
            assert name not in loaded
        else:
            assert name in loaded


def test_broken_command_module_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    # A command module that exists but fails to import one of *its* dependencies is a bug: it must surface.
    real_import = cli_main.importlib.import_module

    def fake_import(name: str) -> types.ModuleType:
        if name == "nanprobe.cli.cmd_half_written":
            raise ModuleNotFoundError("No module named 'somedependency'", name="somedependency")
        return real_import(name)

    monkeypatch.setitem(cli_main.COMMANDS, "half", "nanprobe.cli.cmd_half_written")
    monkeypatch.setattr(cli_main.importlib, "import_module", fake_import)
    with pytest.raises(ModuleNotFoundError, match="somedependency"):
        cli_main.load_commands()


@pytest.mark.parametrize(("command", "code", "word"), [(["scan"], 0, "CLEAN"),
                                                      (["trace", "--no-replay"], 1, "NON-FINITE")])
def test_no_color_removes_ansi_codes(files: Files, monkeypatch: pytest.MonkeyPatch, command: list[str], code: int,
                                     word: str) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    colored = run_cli(command[0], files.ours, *command[1:])
    plain = run_cli(command[0], files.ours, *command[1:], "--no-color")
    assert colored.code == plain.code == code
    assert "\x1b[" in colored.out
    assert "\x1b[" not in plain.out and word in plain.out


@pytest.mark.slow
def test_installed_console_script(files: Files, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("nanprobe")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    out = tmp_path / "scan.json"
    done = subprocess.run([str(script), "scan", str(files.generic), "--json", str(out)], capture_output=True,
                          text=True, env=env, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "CLEAN" in done.stdout and out.exists()
    bad = subprocess.run([str(script), "trace", str(tmp_path / "missing.pt")], capture_output=True, text=True,
                         env=env, cwd=root, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("nanprobe: error:") and "Traceback" not in bad.stderr
    assert bad.stdout == ""
