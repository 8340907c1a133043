"""The `modelkit` command examples of README.md run, in order, and print what they show
(numbers aside: timings and freshly trained accuracies differ from run to run)."""

import re
from pathlib import Path

from click.testing import CliRunner

from modelkit.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
SECTION = ROOT / "README.md"
EXAMPLES = re.findall(r"```console\n\$ modelkit (.*?)\n(.*?)```", SECTION.read_text(), flags=re.S)


def skeleton(text: str) -> list[str]:
    """Lines without numbers and with runs of spaces collapsed (tables re-align around them)."""
    numbers = re.sub(r"[-+]?\d[\d,]*(\.\d+)?(e[-+]?\d+)?", "#", text)
    return [" ".join(line.split()) for line in numbers.strip().splitlines()]


def test_examples_run_and_print_what_they_show(tmp_path, monkeypatch):
    (tmp_path / "samples").symlink_to(ROOT / "samples")
    monkeypatch.chdir(tmp_path)
    assert len(EXAMPLES) >= 9
    for command, shown in EXAMPLES:
        done = CliRunner().invoke(cli, command.split())
        assert done.exit_code == 0, f"modelkit {command}\n{done.output}"
        assert skeleton(done.stdout) == skeleton(shown), f"modelkit {command}"
