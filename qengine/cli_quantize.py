"""CLI commands beyond inspect/run: registered into the parser by `qengine.cli`."""

COMMANDS = []
