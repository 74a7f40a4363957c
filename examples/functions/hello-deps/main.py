"""A function with a dependency: requirements.txt next to this file names ``humanize``, and the builder
installs it into a layer of its own (shared by every function with the same requirements).

    minictl function create hello-deps --zip examples/functions/hello-deps
    curl -X POST -H 'Content-Type: application/json' -d '{"n": 1234567}' URL    # "1234567 is 1.2 million"
"""

import humanize


def run(n=1234567):
    return f"{n} is {humanize.intword(n)}"
