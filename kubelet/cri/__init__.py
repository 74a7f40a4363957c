"""CRI v1 client code generated from ``api.proto`` (the project's own subset of ``runtime.v1``).

Regenerate with ``scripts/gen-cri.sh``; never edit ``api_pb2*.py`` by hand.
"""
