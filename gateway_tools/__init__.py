"""Offline tooling behind `gateway classify ...`: training, evaluation, labels, held-out protocols.

Never imported by the server (`gateway serve`); it may import the serving package.
"""
