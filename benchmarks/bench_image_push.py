"""Function-image push on a cached base: the builder's hot path, against a floor of the raw HTTP calls.

    python benchmarks/bench_image_push.py [--count 50] [--base python|busybox]

Starts its own registry (Debian's docker-registry, loopback, free port) and pushes the base once
(``--base python`` uses the cached python:3.11 when the image cache has it, else busybox from a
temporary cache). Then, ``--count`` times, each to a fresh repository ``fn/bench-N``:

1. library: build a one-file layer (a few hundred bytes of handler code) + config + manifest on the
   base and ``push_image(..., base_repo=...)``: mount the base blob, HEAD + upload the layer and the
   config (concurrently), PUT the manifest. Timed build+push, and push alone; then build+push with
   ``check_below`` (the small new blobs uploaded without a HEAD first).
2. floor: the same requests made one after another with a bare ``httpx.Client`` and bytes prepared
   beforehand (POST mount; HEAD, POST, PUT layer; HEAD, POST, PUT config; PUT manifest), and the
   minimum without the existence checks (6 requests).

Prints p50/p95 of each and the ratio library/floor. Every loop is bounded; exits 0 with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from minik8s.images import base as base_images
from minik8s.images.build import build_image, push_image
from minik8s.images.layers import Entry, layer_from_entries
from minik8s.images.oci import ContainerConfig, Image
from minik8s.images.registry import Registry
from minik8s.testing import RegistryProcess

PHASE_LIMIT = 120.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def handler(i: int) -> bytes:
    return (f"# function {i}\nimport json\n\n\ndef main(args):\n    return {{'n': {i}, 'echo': args}}\n"
            + "#" * 300 + "\n").encode()


def function_image(base: Image, i: int) -> Image:
    layer = layer_from_entries([Entry.dir("app"), Entry.file("app/handler.py", handler(i))])
    return build_image(base, [layer], ContainerConfig(cmd=["python3", "-m", "wrapper"], working_dir="/app",
                                                      env=[f"FUNCTION_NAME=bench-{i}"]))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def raw_push(http: httpx.Client, repo: str, base_repo: str, image: Image, *, checks: bool) -> None:
    """The push's requests, one after another, on a bare client."""
    r = http.post(f"/v2/{repo}/blobs/uploads/", params={"mount": image.layers[0].digest, "from": base_repo})
    assert r.status_code == 201, r.text
    for digest, data in ((image.layers[-1].digest, image.layers[-1].read()), (image.config_digest,
                                                                               image.config_bytes)):
        if checks:
            assert http.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
        r = http.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = httpx.URL(r.headers["location"]).copy_add_param("digest", digest)
        r = http.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    r = http.put(f"/v2/{repo}/manifests/v1", content=image.manifest_bytes,
                 headers={"Content-Type": image.media_type})
    assert r.status_code == 201, r.text


def summary(name: str, values: list[float]) -> str:
    return (f"{name}: p50 {pct(values, .5) * 1000:.2f} ms, p95 {pct(values, .95) * 1000:.2f} ms, "
            f"mean {statistics.mean(values) * 1000:.2f} ms (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--base", choices=("python", "busybox"), default="python")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")

    with tempfile.TemporaryDirectory(prefix="mk8s-bench-img-") as tmp, RegistryProcess() as proc:
        base_img = base_images.cached_image("python") if args.base == "python" else None
        base_name = "python:3.11 (cached)"
        if base_img is None:
            base_img = base_images.ensure_image("busybox", cache=Path(tmp) / "cache", progress=None)
            base_name = "busybox:latest"
        base_repo = "library/base"
        with Registry(proc.url) as reg, httpx.Client(base_url=proc.url, verify=False) as http:
            t0 = time.perf_counter()
            push_image(reg, base_repo, "1", base_img)
            print(f"base {base_name}: {base_img.size / 1e6:.1f} MB compressed, pushed once in "
                  f"{time.perf_counter() - t0:.2f}s")
            prepared = [function_image(base_img, 20_000 + i) for i in range(2 * args.count + 6)]
            for i in range(3):   # warm-up (connections, code paths)
                push_image(reg, f"fn/warm-{i}", "v1", function_image(base_img, 10_000 + i), base_repo=base_repo)
                raw_push(http, f"fn/rawwarm-{i}", base_repo, prepared.pop(), checks=True)

            # The four variants take turns, so that they share whatever else the machine is doing.
            total: list[float] = []
            push_only: list[float] = []
            unchecked: list[float] = []
            floors: dict[bool, list[float]] = {True: [], False: []}
            deadline = time.monotonic() + PHASE_LIMIT
            for i in range(args.count):
                t0 = time.perf_counter()
                image = function_image(base_img, i)
                t1 = time.perf_counter()
                result = push_image(reg, f"fn/bench-{i}", "v1", image, base_repo=base_repo)
                t2 = time.perf_counter()
                assert result.mounted == [base_img.layers[0].digest] and len(result.uploaded) == 2, result
                total.append(t2 - t0)
                push_only.append(t2 - t1)
                t0 = time.perf_counter()
                image = function_image(base_img, 5_000 + i)
                push_image(reg, f"fn/bench-nocheck-{i}", "v1", image, base_repo=base_repo, check_below=1 << 20)
                unchecked.append(time.perf_counter() - t0)
                for checks in (True, False):
                    image = prepared.pop()
                    t0 = time.perf_counter()
                    raw_push(http, f"fn/raw-{checks:d}-{i}", base_repo, image, checks=checks)
                    floors[checks].append(time.perf_counter() - t0)
                if time.monotonic() > deadline:
                    break

    print(summary("library build+push", total))
    print(summary("library push only ", push_only))
    print(summary("library build+push, check_below=1 MiB (no HEAD for the small new blobs)", unchecked))
    print(summary("floor: raw httpx, same 8 requests sequential", floors[True]))
    print(summary("floor: raw httpx, 6 requests (no HEAD checks)", floors[False]))
    ratio = pct(total, .5) / pct(floors[True], .5)
    print(f"ratio library build+push / raw floor (p50): {ratio:.2f}; push only: "
          f"{pct(push_only, .5) / pct(floors[True], .5):.2f}; vs the 6-request minimum: "
          f"{pct(total, .5) / pct(floors[False], .5):.2f}; check_below vs the 6-request minimum: "
          f"{pct(unchecked, .5) / pct(floors[False], .5):.2f}")
    print(f"goal ~50 ms per function image build+push: {'met' if pct(total, .5) <= 0.05 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
