"""Pods run for real: the scheduler binds, the kubelet runs them on the cluster's containerd (CRI),
runc, CNI and cgroupfs; logs and exec go through the apiserver to the kubelet.

Every check reads the real parts, not only the API: ``ctr -n k8s.io`` on the cluster's own socket,
cgroupfs files under ``/sys/fs/cgroup/<controller>/<cgroup root>/pod<uid>/<container id>``, the pod's
network namespace (a mount under ``containerd/state``, entered with ``nsenter --net``), host-local's
IPAM folder, the registry's log and catalog, the host's own HTTP requests to the pod IP.
One cluster for the module (``node_cluster`` in conftest.py); each test has a namespace of its own.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from minik8s.testing import wait_until

pytestmark = [pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "pod-multi.yaml"
MiB = 1024 * 1024
CPU_PERIOD_US = 100_000


def busybox_pod(name: str, *, script: str = "sleep 1000000 & wait", requests: dict[str, str] | None = None,
                limits: dict[str, str] | None = None, image: str = "busybox", **spec: Any) -> dict[str, Any]:
    """A one-container busybox pod whose shell exits at once on SIGTERM (PID 1 ignores it otherwise)."""
    container: dict[str, Any] = {"name": "main", "image": image,
                                 "command": ["sh", "-c", f"trap 'exit 0' TERM; {script}"]}
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v}
    if resources:
        container["resources"] = resources
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [container], **spec}}


def container_id(status: dict[str, Any]) -> str:
    cid = str(status.get("containerID") or "")
    assert cid.startswith("containerd://"), status
    return cid.removeprefix("containerd://")


def sandboxes(nc: Any, uid: str) -> dict[str, dict[str, Any]]:
    """The pod's sandboxes in containerd: id → ``ctr containers info`` (labels, OCI spec)."""
    out = {}
    for cid in nc.containers():
        info = json.loads(nc.ctr("containers", "info", cid))
        labels = info.get("Labels") or {}
        if labels.get("io.cri-containerd.kind") == "sandbox" and labels.get("io.kubernetes.pod.uid") == uid:
            out[cid] = info
    return out


def netns_path(info: dict[str, Any]) -> str:
    for ns in info["Spec"]["linux"]["namespaces"]:
        if ns["type"] == "network":
            return str(ns["path"])
    raise AssertionError(f"no network namespace in {info['Spec']['linux']['namespaces']}")


def cpu_millis(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def mem_bytes(q: str) -> int:
    units = {"Ki": 1024, "Mi": MiB, "Gi": 1024 * MiB, "K": 1000, "M": 1000**2, "G": 1000**3}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(q)


def requested_on_node(nc: Any) -> tuple[int, int]:
    """cpu (millicores) and memory (bytes) requested by the non-terminated pods bound to the node."""
    items = nc.api.get(f"/api/v1/pods?fieldSelector=spec.nodeName={nc.node_name}")["items"]
    cpu = mem = 0
    for pod in items:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        for c in pod["spec"]["containers"]:
            req = (c.get("resources") or {}).get("requests") or {}
            cpu += cpu_millis(req.get("cpu", "0"))
            mem += mem_bytes(req.get("memory", "0"))
    return cpu, mem


def stays(predicate: Any, seconds: float, what: str) -> None:
    """``predicate`` holds on every poll for ``seconds`` (a bounded poll, not a sleep)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"{what} no longer holds"
        time.sleep(0.2)


# ---- the example pod: two containers, localhost, emptyDir, hostPath, cgroups, logs, exec --------------------


@pytest.fixture(scope="module")
def multi(node_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """examples/pod-multi.yaml in a namespace of its own (hostPath moved to a temporary folder), Running."""
    nc = node_cluster
    ns = "e2e-multi"
    nc.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    host_dir = tmp_path_factory.mktemp("hostpath") / "notes"
    pod = yaml.safe_load(EXAMPLE.read_text())
    for vol in pod["spec"]["volumes"]:
        if "hostPath" in vol:
            vol["hostPath"]["path"] = str(host_dir)
    manifest = tmp_path_factory.mktemp("manifests") / "pod-multi.yaml"
    manifest.write_text(yaml.safe_dump(pod))
    t0 = time.monotonic()
    out = nc.minictl("apply", "-n", ns, "-f", str(manifest)).stdout
    assert "pod/multi" in out, out
    running = nc.wait_running(ns, "multi", timeout=90)
    yield {"ns": ns, "pod": running, "spec": pod, "host_dir": host_dir, "started_in": time.monotonic() - t0}
    nc.delete_pod(ns, "multi")
    nc.api.delete(f"/api/v1/namespaces/{ns}")


def test_two_container_pod_runs(node_cluster: Any, multi: dict[str, Any]) -> None:
    nc, pod = node_cluster, multi["pod"]
    status = pod["status"]
    # Through the real scheduler (a binding to our node) and kubelet.
    assert pod["spec"]["nodeName"] == nc.node_name
    for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
        assert nc.condition(pod, kind)["status"] == "True", (kind, status["conditions"])
    assert status["phase"] == "Running" and status.get("startTime")
    assert status["hostIP"] == nc.ident.gateway
    ip = status["podIP"]
    assert ipaddress.ip_address(ip) in nc.ident.network and ip != nc.ident.gateway
    assert status["podIPs"] == [{"ip": ip}]
    names = {s["name"]: s for s in status["containerStatuses"]}
    assert set(names) == {"web", "client"}
    for s in names.values():
        assert s["ready"] is True and s["started"] is True and "running" in s["state"], s
        assert s["restartCount"] == 0 and s["image"] in ("busybox", "docker.io/library/busybox:latest"), s
        assert s["imageID"].startswith("docker.io/library/busybox@sha256:"), s
    # The real parts: both containers and the sandbox run in the cluster's containerd, the IP is host-local's.
    ids = {container_id(s) for s in names.values()}
    sb = sandboxes(nc, pod["metadata"]["uid"])
    assert len(sb) == 1, sb
    assert ids | set(sb) <= nc.containers() and ids | set(sb) <= nc.tasks()
    assert ip in nc.ipam_ips()
    netns = netns_path(next(iter(sb.values())))
    assert netns.startswith(str(nc.layout.containerd_state)) and netns in nc.netns_mounts()
    addrs = nc.run("nsenter", f"--net={netns}", "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"inet {ip}/" in addrs, addrs
    # The pod's events tell of the pulls/starts.
    reasons = {e["reason"] for e in nc.api.events(multi["ns"])
               if e["involvedObject"].get("name") == "multi"}
    assert {"Scheduled", "Started"} <= reasons, reasons


def test_client_reaches_server_on_localhost_and_host_reaches_pod_ip(node_cluster: Any, multi: dict[str, Any]) -> None:
    nc, ns, pod = node_cluster, multi["ns"], multi["pod"]
    ip, node = pod["status"]["podIP"], nc.node_name
    expected = f"hello from multi ({ip}) on {node}: minik8s says hi"

    def fetched() -> str:
        out = nc.minictl("logs", "-n", ns, "multi", "-c", "client").stdout
        return out if "fetched: " in out else ""

    logs = wait_until(fetched, timeout=30, what="the client's fetch in its log")
    assert f"fetched: {expected}" in logs, logs
    assert f"client in /shared of {ns}/multi" in logs, logs  # workingDir and fieldRef env
    # The host reaches the pod on its IP (the cluster bridge), port 80 of busybox httpd.
    status, body = wait_until(lambda: nc.http_get(f"http://{ip}/"), timeout=20, what=f"HTTP from {ip}")
    assert status == 200 and body.strip() == expected
    # hostPath: the client wrote the pod's name into the node's folder.
    note = Path(multi["host_dir"]) / "last-pod"
    assert wait_until(lambda: note.is_file() and note.read_text().strip(), timeout=20, what=str(note)) == "multi"
    # The server saw both: the client from 127.0.0.1, the host from the bridge's address.
    web = nc.minictl("logs", "-n", ns, "multi", "-c", "web").stdout
    assert "127.0.0.1" in web and nc.ident.gateway in web, web


def test_emptydir_shared_between_containers(node_cluster: Any, multi: dict[str, Any]) -> None:
    nc, ns = node_cluster, multi["ns"]
    a = nc.minictl("exec", "-n", ns, "multi", "-c", "web", "--", "cat", "/www/index.html").stdout
    b = nc.minictl("exec", "-n", ns, "multi", "-c", "client", "--", "cat", "/shared/index.html").stdout
    assert a == b and a.startswith("hello from multi"), (a, b)
    token = f"written-by-web-{time.monotonic_ns()}"
    nc.minictl("exec", "-n", ns, "multi", "-c", "web", "--", "sh", "-c", f"echo {token} > /www/new.txt")
    seen = nc.minictl("exec", "-n", ns, "multi", "-c", "client", "--", "cat", "/shared/new.txt").stdout
    assert seen.strip() == token
    # It is one folder on the node, under the kubelet's root.
    uid = multi["pod"]["metadata"]["uid"]
    on_node = nc.layout.kubelet / "pods" / uid / "volumes" / "kubernetes.io~empty-dir" / "www" / "new.txt"
    assert on_node.read_text().strip() == token
    # readOnly mounts are read-only.
    denied = nc.minictl("exec", "-n", ns, "multi", "-c", "client", "--", "sh", "-c", "echo x > /shared/x",
                        check=False)
    assert denied.returncode != 0 and "Read-only" in denied.stderr + denied.stdout, denied


def test_cgroup_limits_equal_the_spec(node_cluster: Any, multi: dict[str, Any]) -> None:
    nc, pod = node_cluster, multi["pod"]
    uid = pod["metadata"]["uid"]
    specs = {c["name"]: c for c in multi["spec"]["spec"]["containers"]}
    for s in pod["status"]["containerStatuses"]:
        cid = container_id(s)
        limits = specs[s["name"]]["resources"]["limits"]
        requests = specs[s["name"]]["resources"]["requests"]
        mem = nc.container_cgroup("memory", uid, cid)
        cpu = nc.container_cgroup("cpu", uid, cid)
        assert int((mem / "memory.limit_in_bytes").read_text()) == mem_bytes(limits["memory"])
        period = int((cpu / "cpu.cfs_period_us").read_text())
        assert period == CPU_PERIOD_US
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == cpu_millis(limits["cpu"]) * period // 1000
        assert int((cpu / "cpu.shares").read_text()) == cpu_millis(requests["cpu"]) * 1024 // 1000
        # The container's processes are in that cgroup (it is the one runc put them in).
        procs = (mem / "cgroup.procs").read_text().split()
        assert procs, f"no process in {mem}"
        assert f"{nc.ident.cgroup_root}/pod{uid}/{cid}" in Path(f"/proc/{procs[0]}/cgroup").read_text()


def test_logs_with_minictl_and_kubectl(node_cluster: Any, multi: dict[str, Any]) -> None:
    nc, ns = node_cluster, multi["ns"]
    wait_until(lambda: "fetched: " in nc.minictl("logs", "-n", ns, "multi", "-c", "client").stdout, timeout=30,
               what="the client's log")
    mine = nc.minictl("logs", "-n", ns, "pod/multi", "-c", "client").stdout
    theirs = nc.kubectl("logs", "-n", ns, "multi", "-c", "client").stdout
    assert mine == theirs and "fetched: hello from multi" in theirs, (mine, theirs)
    last = nc.kubectl("logs", "-n", ns, "multi", "-c", "client", "--tail=1").stdout
    assert last.splitlines() == [theirs.splitlines()[-1]]
    # Two containers: the container must be named (kubectl's wording from the kubelet).
    unnamed = nc.minictl("logs", "-n", ns, "multi", check=False)
    assert unnamed.returncode != 0 and "web" in unnamed.stderr and "client" in unnamed.stderr, unnamed
    missing = nc.kubectl("logs", "-n", ns, "nosuchpod", check=False)
    assert missing.returncode != 0 and "not found" in missing.stderr, missing


def test_exec_with_minictl(node_cluster: Any, multi: dict[str, Any]) -> None:
    nc, ns = node_cluster, multi["ns"]
    env = nc.minictl("exec", "-n", ns, "multi", "-c", "web", "--", "sh", "-c",
                     'echo "$POD_NAME $POD_NAMESPACE $NODE_NAME $POD_IP $GREETING"; pwd').stdout.splitlines()
    ip = multi["pod"]["status"]["podIP"]
    assert env == [f"multi {ns} {nc.node_name} {ip} minik8s says hi", "/www"], env
    failed = nc.minictl("exec", "-n", ns, "multi", "-c", "client", "--", "sh", "-c", "echo oops >&2; exit 3",
                        check=False)
    assert failed.returncode == 3 and "oops" in failed.stderr, failed
    # The same process tree as ctr sees it: exec runs in the container's own namespaces.
    hostname = nc.minictl("exec", "-n", ns, "multi", "-c", "client", "--", "hostname").stdout.strip()
    assert hostname == "multi"


# ---- delete and re-create ----------------------------------------------------------------------------------


def test_delete_cleans_up_everything_and_the_name_can_be_reused(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, busybox_pod("again", limits={"cpu": "100m", "memory": "32Mi"}))
    pod = nc.wait_running(ns, "again")
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    cid = container_id(pod["status"]["containerStatuses"][0])
    sb = sandboxes(nc, uid)
    assert len(sb) == 1
    sandbox_id = next(iter(sb))
    netns = netns_path(sb[sandbox_id])
    before = {"containers": nc.containers(), "tasks": nc.tasks(), "ips": nc.ipam_ips(), "netns": nc.netns_mounts()}
    assert {cid, sandbox_id} <= before["containers"] and {cid, sandbox_id} <= before["tasks"]
    assert ip in before["ips"] and netns in before["netns"]
    assert nc.pod_cgroups(uid), "the pod's cgroup folders exist while it runs"
    pod_dir = nc.layout.kubelet / "pods" / uid
    assert pod_dir.is_dir()

    t0 = time.monotonic()
    out = nc.minictl("delete", "-n", ns, "pod", "again").stdout  # waits until the object is gone
    assert 'pod "again" deleted' in out, out
    took = time.monotonic() - t0
    assert nc.api.pod(ns, "again") is None
    assert cid not in nc.containers() and sandbox_id not in nc.containers()
    assert cid not in nc.tasks() and sandbox_id not in nc.tasks()
    assert ip not in nc.ipam_ips()
    assert netns not in nc.netns_mounts() and not Path(netns).exists()
    assert nc.pod_cgroups(uid) == []
    assert not pod_dir.exists()
    assert took < 15, f"delete took {took:.1f}s (grace 5s, the shell exits on SIGTERM at once)"

    # The same name again: a new pod (new uid) that runs.
    nc.api.create_pod(ns, busybox_pod("again", limits={"cpu": "100m", "memory": "32Mi"}))
    again = nc.wait_running(ns, "again")
    assert again["metadata"]["uid"] != uid
    assert again["status"]["podIP"] in nc.ipam_ips()
    new_cid = container_id(again["status"]["containerStatuses"][0])
    assert new_cid != cid and new_cid in nc.tasks()
    assert nc.pod_cgroups(again["metadata"]["uid"])


# ---- scheduling: resources and nodeSelector ----------------------------------------------------------------


def unschedulable(pod: dict[str, Any]) -> dict[str, Any] | None:
    cond = conftest_condition(pod, "PodScheduled")
    if cond.get("status") == "False" and cond.get("reason") == "Unschedulable":
        return cond
    return None


def conftest_condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def test_requests_beyond_allocatable_stay_pending_until_capacity_frees(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    alloc = nc.node()["status"]["allocatable"]
    alloc_cpu = cpu_millis(alloc["cpu"])

    # More than the node has at all: Pending for good, with the scheduler's reason.
    nc.api.create_pod(ns, busybox_pod("huge", requests={"cpu": f"{alloc_cpu + 1000}m"}))
    pod = nc.wait_pod(ns, "huge", unschedulable, timeout=30, what="huge: PodScheduled=False Unschedulable")
    message = conftest_condition(pod, "PodScheduled")["message"]
    assert message == "0/1 nodes are available: 1 Insufficient cpu.", message
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    wait_until(lambda: [e for e in nc.api.events(ns) if e["involvedObject"].get("name") == "huge"
                        and e["reason"] == "FailedScheduling" and "Insufficient cpu" in e["message"]],
               timeout=10, what="a FailedScheduling event for huge")
    described = nc.kubectl("describe", "pod", "-n", ns, "huge").stdout
    assert "Insufficient cpu" in described, described

    # Fits the node, but not next to a big pod that holds the capacity: Pending until the big pod goes.
    used_cpu, _ = requested_on_node(nc)
    free = alloc_cpu - used_cpu
    assert free >= 400, f"the node has only {free}m cpu free for this test"
    nc.api.create_pod(ns, busybox_pod("big", requests={"cpu": f"{free - 100}m"}))
    nc.wait_running(ns, "big")
    nc.api.create_pod(ns, busybox_pod("waits", requests={"cpu": "200m"}))
    pod = nc.wait_pod(ns, "waits", unschedulable, timeout=30, what="waits: Unschedulable")
    assert "Insufficient cpu" in conftest_condition(pod, "PodScheduled")["message"]
    stays(lambda: not (nc.api.pod(ns, "waits") or {}).get("spec", {}).get("nodeName"), 2, "waits unbound")
    nc.delete_pod(ns, "big")
    # The scheduler retries when a pod goes away (not only on its periodic retry, 60 s by default).
    running = nc.wait_running(ns, "waits", timeout=30)
    assert running["spec"]["nodeName"] == nc.node_name
    assert conftest_condition(running, "PodScheduled")["status"] == "True"
    assert unschedulable(nc.api.pod(ns, "huge") or {}), "huge still does not fit"


def test_node_selector_matching_no_node_stays_pending(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    nc.api.create_pod(ns, busybox_pod("nowhere", nodeSelector={"disktype": "ssd"}))
    nc.api.create_pod(ns, busybox_pod("linux", nodeSelector={"kubernetes.io/os": "linux"}))
    pod = nc.wait_pod(ns, "nowhere", unschedulable, timeout=30, what="nowhere: Unschedulable")
    assert "node(s) didn't match Pod's node affinity/selector" in conftest_condition(pod, "PodScheduled")["message"]
    assert nc.wait_running(ns, "linux")["spec"]["nodeName"] == nc.node_name
    stays(lambda: (nc.api.pod(ns, "nowhere") or {}).get("status", {}).get("phase") == "Pending"
          and not nc.api.pod(ns, "nowhere")["spec"].get("nodeName"), 2, "nowhere Pending")


# ---- images: only the cluster registry ---------------------------------------------------------------------


def waiting_reasons(nc: Any, ns: str, name: str, since_rv: str, timeout: float) -> list[tuple[str, str, float]]:
    """The container's waiting (reason, message, monotonic time) of every status write after ``since_rv``
    (a watch: ErrImagePull lasts only until the kubelet's next sync), until ImagePullBackOff follows ErrImagePull."""
    seen: list[tuple[str, str, float]] = []
    deadline = time.monotonic() + timeout
    params = {"watch": "true", "resourceVersion": since_rv, "fieldSelector": f"metadata.name={name}"}
    try:
        with httpx.stream("GET", f"{nc.ident.api_url}/api/v1/namespaces/{ns}/pods", params=params,
                          timeout=httpx.Timeout(10, read=timeout)) as r:
            for line in r.iter_lines():
                if time.monotonic() > deadline:
                    break
                if not line.strip():
                    continue
                pod = json.loads(line).get("object") or {}
                waiting = (nc.container_status(pod, "main").get("state") or {}).get("waiting") or {}
                if waiting and (not seen or seen[-1][0] != waiting.get("reason")):
                    seen.append((str(waiting.get("reason")), str(waiting.get("message")), time.monotonic()))
                reasons = [r for r, _, _ in seen]
                if "ErrImagePull" in reasons and "ImagePullBackOff" in reasons[reasons.index("ErrImagePull"):]:
                    return seen
    except httpx.ReadTimeout:
        pass
    raise AssertionError(f"{name}: no ErrImagePull followed by ImagePullBackOff within {timeout}s; seen: {seen}")


@pytest.mark.parametrize("image", ["nosuch/thing", "quay.io/x/y"])
def test_unknown_image_fails_fast_with_the_push_hint(node_cluster: Any, node_ns: str, image: str) -> None:
    nc, ns = node_cluster, node_ns
    log_before = len(nc.registry_log())
    t0 = time.monotonic()
    created = nc.api.create_pod(ns, busybox_pod("pull", image=image))
    seen = waiting_reasons(nc, ns, "pull", created["metadata"]["resourceVersion"], timeout=20)
    first_err, err_at = next((msg, at) for reason, msg, at in seen if reason == "ErrImagePull")
    assert err_at - t0 < 5, f"ErrImagePull after {err_at - t0:.1f}s: {seen}"
    assert "minictl image push" in first_err and image in first_err, first_err
    backoff = next(msg for reason, msg, _ in seen if reason == "ImagePullBackOff")
    assert "minictl image push" in backoff, backoff
    pod = nc.api.pod(ns, "pull") or {}
    assert pod["status"]["phase"] == "Pending"
    wait_until(lambda: [e for e in nc.api.events(ns) if e["involvedObject"].get("name") == "pull"
                        and e["reason"] == "Failed" and "ErrImagePull" in e["message"]],
               timeout=10, what="a Failed (ErrImagePull) event for pull")
    # Where did containerd look? Only in the cluster registry (a docker.io name), or nowhere (another host).
    asked = nc.registry_log()[log_before:]
    if image.startswith("quay.io/"):
        # The kubelet refuses a host the cluster does not serve before asking containerd: no request at all.
        assert "/v2/x/y/" not in asked, asked[-2000:]
        # And were containerd asked, its hosts config (certs.d/_default) sends it to the cluster registry too.
        res = nc.run("ctr", "-n", "k8s.io", "--address", nc.socket, "images", "pull", "--hosts-dir",
                     str(nc.layout.certs_d), f"{image}:latest", check=False)
        assert res.returncode != 0 and "not found" in res.stderr, res
        assert "/v2/x/y/manifests/latest?ns=quay.io" in nc.registry_log()[log_before:]
    else:
        assert "/v2/nosuch/thing/manifests/latest?ns=docker.io" in asked, asked[-2000:]
    assert image not in {line.split()[0] for line in nc.ctr("images", "ls").splitlines()[1:] if line.strip()}


def test_busybox_comes_from_the_cluster_registry_only(node_cluster: Any, node_ns: str) -> None:
    nc, ns = node_cluster, node_ns
    reg = nc.ident.registry_url
    # containerd resolves docker.io (and every other host) through the cluster registry, plain http.
    for host in ("docker.io", "_default"):
        hosts = (nc.layout.certs_d / host / "hosts.toml").read_text()
        assert f'server = "{reg}"' in hosts and f'[host."{reg}"]' in hosts, hosts
        assert "registry-1.docker.io" not in hosts and "https://" not in hosts
    config = nc.layout.containerd_config.read_text()
    assert f'config_path = "{nc.layout.certs_d}"' in config, config
    assert {"library/pause", "library/busybox", "library/python"} <= set(nc.catalog())

    # Remove the cached image, so that this pod's kubelet pulls it again (imagePullPolicy Always).
    nc.ctr("images", "rm", "docker.io/library/busybox:latest")
    log_before = len(nc.registry_log())
    pod = busybox_pod("pulled")
    pod["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    nc.api.create_pod(ns, pod)
    running = nc.wait_running(ns, "pulled")
    asked = nc.registry_log()[log_before:]
    assert "/v2/library/busybox/manifests/latest?ns=docker.io" in asked, asked[-2000:]
    assert 'http.request.useragent="containerd/' in asked
    # The image containerd holds is the registry's manifest, byte for byte (same digest).
    manifest = httpx.head(f"{reg}/v2/library/busybox/manifests/latest", timeout=10, headers={
        "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"})
    reg_digest = manifest.headers["Docker-Content-Digest"]
    listed = {line.split()[0]: line.split()[2] for line in nc.ctr("images", "ls").splitlines()[1:] if line.strip()}
    assert listed.get("docker.io/library/busybox:latest") == reg_digest, listed
    image_id = nc.container_status(running, "main")["imageID"]
    assert image_id, running["status"]
    # And containerd has no connection to anything but loopback (no outside traffic).
    pid = next(p["pid"] for p in nc.cluster.status() if p["name"] == "containerd")
    conns = nc.run("ss", "-Htnp", "state", "established").stdout
    outside = [line for line in conns.splitlines() if f"pid={pid}," in line
               and not all(part.startswith(("127.", "[::1]", "[::ffff:127.")) for part in line.split()[2:4])]
    assert not outside, outside


def test_minictl_image_push_makes_an_image_runnable(node_cluster: Any, node_ns: str,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """An image built elsewhere (here: busybox exported from containerd as an OCI tarball) is pushed with
    ``minictl image push`` and a pod runs it by its new name, pulled from the cluster registry."""
    nc, ns = node_cluster, node_ns
    archive = tmp_path_factory.mktemp("images") / "app.tar"
    nc.ctr("images", "pull", "--hosts-dir", str(nc.layout.certs_d), "docker.io/library/busybox:latest")
    nc.ctr("images", "export", str(archive), "docker.io/library/busybox:latest")
    name = f"e2e-app-{time.monotonic_ns() % 10**8}"
    out = nc.minictl("image", "push", str(archive), "--name", f"{name}:1").stdout
    assert f"pushed {name}:1" in out, out
    assert f"library/{name}" in nc.catalog()
    assert name in nc.minictl("image", "ls").stdout
    log_before = len(nc.registry_log())
    nc.api.create_pod(ns, busybox_pod("app", image=f"{name}:1",
                                      script="echo from-the-pushed-image; sleep 100000 & wait"))
    nc.wait_running(ns, "app")
    assert f"/v2/library/{name}/manifests/1?ns=docker.io" in nc.registry_log()[log_before:]
    logs = wait_until(lambda: "from-the-pushed-image" in (out := nc.minictl("logs", "-n", ns, "app").stdout) and out,
                      timeout=20, what="the pushed image's pod log")
    assert logs.strip() == "from-the-pushed-image"
