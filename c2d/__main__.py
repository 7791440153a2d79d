"""``python -m c2d`` is the ``c2d`` command."""

from c2d.cli import app

app()
