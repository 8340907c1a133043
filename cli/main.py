"""The `modelkit` command line: one click group; each command lives in its own module."""

import click

from modelkit.cli import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelkit")
def cli():
    """modelkit: train, export, check, run and serve neural networks.

    Example: modelkit --version
    """


from modelkit.cli.serve_cmd import serve  # noqa: E402  (commands register after the group)

cli.add_command(serve)

