"""The `modelkit` command line: one click group; each command lives in its own module."""

import click

from modelkit.cli import __version__
from modelkit.cli.bench_cmd import bench
from modelkit.cli.check_cmd import check
from modelkit.cli.convert_cmd import convert
from modelkit.cli.demo_cmd import demo
from modelkit.cli.export_cmd import export
from modelkit.cli.inspect_cmd import inspect
from modelkit.cli.run_cmd import run
from modelkit.cli.serve_cmd import serve

COMMANDS = [demo, export, convert, check, run, inspect, bench, serve]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelkit")
def cli():
    """modelkit: train, export, check, run and serve neural networks.

    Example: modelkit --version
    """


for command in COMMANDS:
    cli.add_command(command)
