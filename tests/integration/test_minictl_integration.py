"""minictl against the real apiserver: the examples apply, show, describe and delete cleanly;
failures print one line and exit 1, with no traceback (checked through the real entry points)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from minictl.main import Session, cli
from minik8s.client.rest import ApiClient
from minik8s.yamlio import load_documents

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = str(ROOT / "examples")


@pytest.fixture()
def ns(apiserver):
    name = f"ctl-{uuid.uuid4().hex[:8]}"
    with ApiClient(apiserver.url) as client:
        client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture()
def ctl(apiserver):
    def invoke(*args: str, input: str | None = None):
        result = CliRunner().invoke(cli, ["-s", apiserver.url, *args], obj=Session(), input=input)
        assert "Traceback" not in result.output
        return result
    return invoke


def run_process(apiserver, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MINIK8S_SERVER": apiserver.url}
    env.pop("MINIK8S_DEBUG", None)
    return subprocess.run(list(args), env=env, input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT)


def example_names() -> list[tuple[str, str]]:
    from minik8s.api import registry
    out = []
    for _, obj in load_documents([EXAMPLES]):
        rt = registry.by_kind(obj["apiVersion"], obj["kind"])
        assert rt is not None
        label = f"{rt.singular}.{rt.group}" if rt.group else rt.singular
        out.append((label, obj["metadata"]["name"]))
    return out


def test_examples_apply_get_describe_delete(ctl, ns):
    names = example_names()
    first = ctl("apply", "-f", EXAMPLES, "-n", ns)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [f"{label}/{name} created" for label, name in names]

    again = ctl("apply", "-f", EXAMPLES, "-n", ns)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [f"{label}/{name} unchanged" for label, name in names]

    wide = ctl("get", "pods", "-n", ns, "-o", "wide")
    assert wide.exit_code == 0, wide.output
    header = re.split(r"\s{3,}", wide.stdout.splitlines()[0])
    assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "IP" in header and "NODE" in header
    example_pods = sorted(name for label, name in names if label == "pod")
    assert sorted(line.split()[0] for line in wide.stdout.splitlines()[1:]) == example_pods

    everything = ctl("get", "all", "-n", ns)
    assert everything.exit_code == 0, everything.output
    for row in ("pod/hello", "service/web", "service/web-nodeport", "deployment.apps/web",
                "replicaset.apps/sleepers", "horizontalpodautoscaler.autoscaling/web", "function.minik8s.io/hello"):
        assert re.search(rf"^{re.escape(row)}\s", everything.stdout, re.M), row

    svc = ctl("get", "svc", "web-nodeport", "-n", ns, "-o", "jsonpath={.spec.ports[0].nodePort} {.spec.clusterIP}")
    node_port, cluster_ip = svc.stdout.split()
    assert node_port == "30080" and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", cluster_ip)

    described = ctl("describe", "deployment", "web", "-n", ns)
    assert described.exit_code == 0, described.output
    assert described.stdout.startswith(f"Name:         web\nNamespace:    {ns}\nLabels:       app=web\n")
    assert "Spec:" in described.stdout and "Events:" in described.stdout

    # Changing a file and applying again updates in place; server-allocated fields survive.
    changed = (ROOT / "examples" / "service-nodeport.yaml").read_text().replace("app: web", "app: web2")
    out = ctl("apply", "-f", "-", "-n", ns, input=changed)
    assert (out.exit_code, out.stdout) == (0, "service/web-nodeport configured\n")
    svc2 = ctl("get", "svc", "web-nodeport", "-n", ns, "-o", "jsonpath={.spec.clusterIP} {.spec.selector.app}")
    assert svc2.stdout == f"{cluster_ip} web2"

    gone = ctl("delete", "-f", EXAMPLES, "-n", ns, "--timeout", "30")
    assert gone.exit_code == 0, gone.output
    assert gone.stdout.splitlines() == [f'{label} "{name}" deleted' for label, name in names]
    empty = ctl("get", "all", "-n", ns)
    assert (empty.exit_code, empty.stdout, empty.stderr) == (0, "", f"No resources found in {ns} namespace.\n")


def test_errors_are_one_line_through_the_real_entry_points(apiserver, ns, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n spec: {}\n")
    py = [sys.executable, "-m", "minictl.main"]

    syntax = run_process(apiserver, *py, "apply", "-f", str(bad))
    assert syntax.returncode == 1
    assert re.fullmatch(rf"error: {re.escape(str(bad))}: line \d+: [^\n]+\n", syntax.stderr), syntax.stderr
    assert syntax.stdout == ""

    invalid = run_process(apiserver, *py, "apply", "-n", ns, "-f", "-",
                          stdin="apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\n"
                                "spec: {containers: [{name: c}]}\n")
    assert invalid.returncode == 1
    assert invalid.stderr == 'The Pod "noimage" is invalid: spec.containers[0].image: Required value\n'

    missing = run_process(apiserver, *py, "get", "pod", "nope", "-n", ns)
    assert (missing.returncode, missing.stderr) == (1, 'Error from server (NotFound): pods "nope" not found\n')

    script = Path(sys.executable).parent / "minictl"
    if script.exists():  # the console script installed by `pip install -e .`
        dup = run_process(apiserver, str(script), "create", "-n", ns, "-f", str(ROOT / "examples" / "pod.yaml"))
        assert (dup.returncode, dup.stdout) == (0, "pod/hello created\n"), dup.stderr
        dup = run_process(apiserver, str(script), "create", "-n", ns, "-f", str(ROOT / "examples" / "pod.yaml"))
        assert dup.returncode == 1
        assert dup.stderr == 'Error from server (AlreadyExists): pods "hello" already exists\n'

    env = {**os.environ, "MINIK8S_SERVER": "http://127.0.0.1:9"}
    down = subprocess.run([*py, "get", "pods"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert down.returncode == 1
    assert re.fullmatch(r"error: cannot reach the minik8s apiserver at http://127\.0\.0\.1:9: [^\n]+\n", down.stderr)
    assert "Traceback" not in syntax.stderr + invalid.stderr + missing.stderr + down.stderr


def test_get_watch_prints_rows_as_things_change(apiserver, ns):
    env = {**os.environ, "MINIK8S_SERVER": apiserver.url}
    proc = subprocess.Popen([sys.executable, "-m", "minictl.main", "get", "pods", "-n", ns, "-w", "--timeout", "8"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        with ApiClient(apiserver.url) as client:
            # The watch starts from the list's resourceVersion, so a pod made now is seen either way.
            client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "watched", "namespace": ns},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "READY"]
    assert any(line.split()[0] == "watched" for line in lines[1:])
    assert "Traceback" not in err
