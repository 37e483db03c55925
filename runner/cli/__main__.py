"""`python -m runner.cli` is `ksr`."""

from runner.cli import main

main()
