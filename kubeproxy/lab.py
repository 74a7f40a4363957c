"""A throwaway network lab for kubeproxy's integration tests and benchmark (root only).

A bridge of its own with a gateway address, N network namespaces (each a veth on the bridge, hairpin
on, default route via the gateway) running ``python3 -m http.server`` that answers ``GET /id`` with
the namespace's name. Everything is named after a random tag and removed by :meth:`Lab.close`.
Nothing here touches the machine's own interfaces or any cluster's bridge.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKEND_PORT = 8080


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def free_subnet() -> ipaddress.IPv4Network:
    """A random 10.2xx.y.0/24 no route of this machine covers or overlaps."""
    routes = sh("ip", "-4", "route", "show", "table", "all").stdout
    used = []
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            if word not in ("default", "local", "broadcast"):
                used.append(ipaddress.IPv4Network(word, strict=False))
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise RuntimeError("no free /24 in 10.200-250.x")


class Lab:
    def __init__(self, n: int = 3, tag: str | None = None) -> None:
        self.tag = tag or f"{random.getrandbits(24):06x}"
        self.bridge = f"kpb{self.tag}"
        self.net = free_subnet()
        self.gateway = str(self.net.network_address + 1)
        self.names = [f"kpl{self.tag}-{i}" for i in range(n)]
        self.ips = [str(self.net.network_address + 10 + i) for i in range(n)]
        self.servers: list[subprocess.Popen[bytes]] = []
        self.dir = Path(tempfile.mkdtemp(prefix=f"kplab-{self.tag}-"))
        self._links: list[str] = []
        self._ns: list[str] = []

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        sh("ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, (ns, ip) in enumerate(zip(self.names, self.ips, strict=True)):
            host_if = f"kpv{self.tag}{i}"
            sh("ip", "netns", "add", ns)
            self._ns.append(ns)
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._links.append(host_if)
            sh("ip", "link", "set", host_if, "master", self.bridge)
            sh("ip", "link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
            sh("ip", "link", "set", host_if, "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/{self.net.prefixlen}", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", self.gateway)
            www = self.dir / ns
            www.mkdir()
            (www / "id").write_text(ns)
            self.servers.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "http.server", str(BACKEND_PORT), "--bind", ip,
                 "--directory", str(www)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 15
        for ns, ip in zip(self.names, self.ips, strict=True):
            while self.exec_get(ns, ip, BACKEND_PORT, count=1).get(ns, 0) != 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"backend {ns} ({ip}) never answered")
                time.sleep(0.2)

    def exec_get(self, ns: str, host: str, port: int, count: int, timeout: float = 2.0) -> dict[str, int]:
        """``count`` GET /id requests from inside ``ns``, a new connection each: answer → how many."""
        code = (
            "import http.client,json,sys\n"
            "c={}\n"
            f"for _ in range({count}):\n"
            "    try:\n"
            f"        h=http.client.HTTPConnection({host!r},{port},timeout={timeout})\n"
            "        h.request('GET','/id');r=h.getresponse();k=r.read().decode();h.close()\n"
            "    except Exception as e:\n"
            "        k='error:'+type(e).__name__\n"
            "    c[k]=c.get(k,0)+1\n"
            "print(json.dumps(c))\n")
        res = sh("ip", "netns", "exec", ns, sys.executable, "-c", code, check=False,
                 timeout=count * (timeout + 1) + 10)
        import json
        try:
            return dict(json.loads(res.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return {"error:exec": count}

    def close(self) -> None:
        for p in self.servers:
            with contextlib.suppress(OSError):
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        for ns in self._ns:
            sh("ip", "netns", "del", ns, check=False)
        for link in reversed(self._links):
            if os.path.exists(f"/sys/class/net/{link}"):
                sh("ip", "link", "del", link, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def host_get(host: str, port: int, count: int, timeout: float = 2.0) -> dict[str, int]:
    """``count`` GET /id requests from the host, a new connection each: answer → how many."""
    import http.client
    out: dict[str, int] = {}
    for _ in range(count):
        try:
            h = http.client.HTTPConnection(host, port, timeout=timeout)
            h.request("GET", "/id")
            key = h.getresponse().read().decode()
            h.close()
        except OSError as exc:
            key = f"error:{type(exc).__name__}"
        out[key] = out.get(key, 0) + 1
    return out
