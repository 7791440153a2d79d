"""``python -m node`` is the ``c2d`` command."""

from node.cli import app

app()
