"""Container log rotation (kubelet/logrotate.py) on FakeRuntime with real files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from kubelet import runtime as rt
from kubelet.fake_runtime import FakeRuntime
from kubelet.logrotate import LogRotator, remove_logs, rotated_files


async def running(tmp_path: Path) -> tuple[FakeRuntime, str, Path]:
    runtime = FakeRuntime()
    sb = rt.SandboxConfig(pod_uid="u1", name="p", namespace="default", log_directory=str(tmp_path / "logs"))
    sid = await runtime.run_sandbox(sb)
    cid = await runtime.create_container(sid, rt.ContainerConfig(name="main", image="busybox",
                                                                 log_path="main/0.log"), sb)
    await runtime.start_container(cid)
    path = tmp_path / "logs" / "main" / "0.log"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    return runtime, cid, path


def write(path: Path, n: int, tag: str = "x") -> None:
    with open(path, "ab") as f:
        f.write(f"2024-05-01T10:00:00.000000000Z stdout F {tag * (n - 41)}\n".encode())


async def test_rotates_over_the_size_keeps_max_files_and_compresses_all_but_the_newest(tmp_path: Path) -> None:
    runtime, cid, path = await running(tmp_path)
    clock = [1_700_000_000.0]
    rotator = LogRotator(runtime, max_size=1000, max_files=4, clock=lambda: clock[0])
    write(path, 999)
    assert await rotator.rotate_all() == 0  # not over the size yet
    for i in range(5):
        write(path, 1500, tag=str(i))
        clock[0] += 1
        assert await rotator.rotate_all() == 1
        assert path.exists() and path.stat().st_size == 0  # the runtime reopened a new file
        files = sorted(os.listdir(path.parent))
        assert len(files) <= 4, files
    assert runtime.calls_to("reopen_container_log") == [(cid,)] * 5
    rotated = rotated_files(str(path))
    # Compression happens before the next rotation (as in Kubernetes): the two newest are plain.
    assert len(rotated) == 3
    assert rotated[0].endswith(".gz") and not rotated[1].endswith(".gz") and not rotated[2].endswith(".gz")
    assert gzip.decompress(Path(rotated[0]).read_bytes()).decode().endswith("2" * 1458 + "\n")
    assert Path(rotated[2]).read_text().endswith("4" * 1458 + "\n")  # the newest rotated: the last lines
    assert rotator.rotations == 5


async def test_two_rotations_in_one_second_keep_both_files(tmp_path: Path) -> None:
    runtime, _, path = await running(tmp_path)
    rotator = LogRotator(runtime, max_size=10, max_files=5, clock=lambda: 1_700_000_000.0)
    for _ in range(3):
        write(path, 100)
        assert await rotator.rotate_all() == 1
    assert len(rotated_files(str(path))) == 3


async def test_exited_containers_are_not_rotated_and_a_refused_reopen_keeps_the_file(tmp_path: Path) -> None:
    runtime, cid, path = await running(tmp_path)
    rotator = LogRotator(runtime, max_size=10, max_files=2)
    write(path, 100)
    runtime.fail_next["reopen_container_log"] = rt.RuntimeFailure("ReopenContainerLog: unavailable")
    assert await rotator.rotate_all() == 0
    assert os.listdir(path.parent) == ["0.log"] and path.stat().st_size == 100  # renamed back
    runtime.exit_container(cid, 0)
    assert await rotator.rotate_all() == 0
    assert os.listdir(path.parent) == ["0.log"]


async def test_leftover_temporaries_are_removed_and_remove_logs_takes_everything(tmp_path: Path) -> None:
    runtime, _, path = await running(tmp_path)
    Path(f"{path}.20240101-000000.000000.gz.tmp").write_text("half a gzip")
    rotator = LogRotator(runtime, max_size=10, max_files=2)
    write(path, 100)
    assert await rotator.rotate_all() == 1
    assert len(os.listdir(path.parent)) == 2 and not any(n.endswith(".tmp") for n in os.listdir(path.parent))
    other = path.parent / "10.log"  # another attempt's file is not this log's
    other.write_text("x")
    remove_logs(str(path))
    assert os.listdir(path.parent) == ["10.log"]


def test_flags_are_checked() -> None:
    runtime = FakeRuntime()
    with pytest.raises(ValueError):
        LogRotator(runtime, max_files=1)
    with pytest.raises(ValueError):
        LogRotator(runtime, max_size=0)
