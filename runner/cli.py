"""The `ksr` command line."""

from __future__ import annotations

import click

from runner import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ksr")
def main() -> None:
    """kube-stream-runner: turn job messages in Redis Streams into Kubernetes Jobs."""
