#!/usr/bin/env bash
# Regenerates the CRI v1 client code (kubelet/cri/api_pb2.py, api_pb2.pyi, api_pb2_grpc.py) from the
# project's own kubelet/cri/api.proto with grpcio-tools. The generated files are committed; run this
# after changing api.proto. Uses the venv's python unless PYTHON is set.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-.venv/bin/python}

# -I . with the path kubelet/cri/api.proto makes the grpc module import "from kubelet.cri import api_pb2".
"$PYTHON" -m grpc_tools.protoc -I . \
    --python_out=. --pyi_out=. --grpc_python_out=. \
    kubelet/cri/api.proto
echo "gen-cri.sh: generated kubelet/cri/api_pb2.py, api_pb2.pyi, api_pb2_grpc.py"
