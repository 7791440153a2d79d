"""The entry points: the ``c2d`` command (:mod:`node.cli`), the demo (:mod:`node.demo`) and the wiring of a
running node (:mod:`node.wiring`: provider API, indexer, engine over one pool).

The top of the one-way dependencies (``c2d`` <- ``steps`` <- ``workflows`` <- ``provider`` <- ``node``):
nothing below imports this package.
"""
