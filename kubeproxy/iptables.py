"""The only place that runs ``iptables-save`` / ``iptables-restore`` (asyncio and blocking variants).

One sync = ``iptables-save -t nat`` + ``-t filter`` (to find stale chains of our prefix and missing
jump rules) and one ``iptables-restore --noflush`` carrying both tables: each table section is
applied as one transaction, so a packet sees either the old chains or the new ones, never a mix.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

from kubeproxy.rules import TABLES, ProxyConfig, Saved, ServicePort, cleanup_text, parse_save, restore_text

log = logging.getLogger("minik8s.kubeproxy.iptables")

WAIT_SECONDS = "5"  # -w: wait this long for the xtables lock another iptables holds
ROUTE_LOCALNET = Path("/proc/sys/net/ipv4/conf/all/route_localnet")


class IptablesError(Exception):
    pass


async def _exec(argv: list[str], stdin: str | None = None, timeout: float = 30.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise IptablesError(f"{argv[0]} timed out after {timeout}s") from None
    if proc.returncode != 0:
        raise IptablesError(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def save() -> dict[str, Saved]:
    texts = await asyncio.gather(*(_exec(["iptables-save", "-t", t]) for t in TABLES))
    return parse_save("\n".join(texts))


async def restore(text: str) -> None:
    try:
        await _exec(["iptables-restore", "-w", WAIT_SECONDS, "--noflush"], stdin=text)
    except IptablesError as exc:
        raise IptablesError(f"{exc}\n--- input ---\n{text}") from None


async def sync(cfg: ProxyConfig, ports: list[ServicePort]) -> str:
    """Make the kernel's chains of our prefix match ``ports``; returns the text applied."""
    text = restore_text(cfg, ports, await save())
    await restore(text)
    return text


def save_blocking() -> dict[str, Saved]:
    texts = [subprocess.run(["iptables-save", "-t", t], capture_output=True, text=True, timeout=30,
                            check=True).stdout for t in TABLES]
    return parse_save("\n".join(texts))


def cleanup_blocking(cfg: ProxyConfig) -> bool:
    """Remove every chain of our prefix and our rules in the built-in chains; True if anything was removed."""
    text = cleanup_text(cfg, save_blocking())
    if not text:
        return False
    res = subprocess.run(["iptables-restore", "-w", WAIT_SECONDS, "--noflush"], input=text, capture_output=True,
                         text=True, timeout=30, check=False)
    if res.returncode != 0:
        raise IptablesError(f"iptables-restore failed: {res.stderr.strip()}\n--- input ---\n{text}")
    return True


def our_chains(cfg: ProxyConfig) -> list[str]:
    """``table/chain`` of every chain of our prefix now in the kernel."""
    return [f"{t}/{c}" for t, s in save_blocking().items() for c in s.chains if c.startswith(cfg.chain_prefix + "-")]


def enable_route_localnet() -> None:
    """NodePorts on 127.0.0.1 need it: DNAT of a loopback-sourced packet to a pod otherwise drops it."""
    try:
        if ROUTE_LOCALNET.read_text().strip() != "1":
            ROUTE_LOCALNET.write_text("1\n")
            log.info("set net.ipv4.conf.all.route_localnet=1 (NodePorts on 127.0.0.1)")
    except OSError as exc:
        log.warning("cannot set route_localnet (NodePorts on 127.0.0.1 will not answer): %s", exc)
