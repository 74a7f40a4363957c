"""The adder: ``minictl function create add --file examples/functions/add.py``.

The body ``{"x": 3, "y": 5}`` becomes ``run(x=3, y=5)``; the answer is its return value as JSON (8).
"""


def run(x, y):
    return x + y
