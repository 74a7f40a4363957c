"""Manifest loading: files, folders, stdin, multi-document, List, and clear errors."""

from __future__ import annotations

import io

import pytest

from minik8s.yamlio import ManifestError, load_documents

POD = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n"


def test_single_document_file(tmp_path):
    f = tmp_path / "pod.yaml"
    f.write_text(POD.format(name="a"))
    [(source, obj)] = load_documents([str(f)])
    assert source == str(f)
    assert obj["metadata"]["name"] == "a"


def test_multi_document_skips_empty_and_labels_by_index(tmp_path):
    f = tmp_path / "all.yaml"
    f.write_text("---\n" + POD.format(name="a") + "---\n---\n" + POD.format(name="b"))
    out = load_documents([str(f)])
    assert [(s.rsplit("/", 1)[1], o["metadata"]["name"]) for s, o in out] == [("all.yaml#1", "a"),
                                                                             ("all.yaml#3", "b")]


def test_list_kind_expands_items(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a}}\n"
                 "- {apiVersion: v1, kind: Pod, metadata: {name: b}}\n")
    out = load_documents([str(f)])
    assert [o["metadata"]["name"] for _, o in out] == ["a", "b"]
    assert out[1][0].endswith("list.yaml items[1]")


def test_folders_sorted_and_recursive(tmp_path):
    (tmp_path / "b.yaml").write_text(POD.format(name="b"))
    (tmp_path / "a.yml").write_text(POD.format(name="a"))
    (tmp_path / "c.json").write_text('{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"}}')
    (tmp_path / "README.md").write_text("# not a manifest")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.yaml").write_text(POD.format(name="d"))
    names = [o["metadata"]["name"] for _, o in load_documents([str(tmp_path)])]
    assert names == ["a", "b", "c"]
    names = [o["metadata"]["name"] for _, o in load_documents([str(tmp_path)], recursive=True)]
    assert names == ["a", "b", "c", "d"]


def test_stdin():
    out = load_documents(["-"], stdin=io.StringIO(POD.format(name="s")))
    assert out == [("<stdin>", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "s"}})]


def test_dates_stay_strings(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(POD.format(name="a") + "  labels:\n    day: 2024-01-02\n")
    [(_, obj)] = load_documents([str(f)])
    assert obj["metadata"]["labels"]["day"] == "2024-01-02"


def test_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n  spec: 1\n")
    with pytest.raises(ManifestError) as info:
        load_documents([str(f)])
    msg = str(info.value)
    assert msg.startswith(f"{f}: line ") and "\n" not in msg


def test_json_syntax_error(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"apiVersion": "v1",\n "kind": }')
    with pytest.raises(ManifestError, match=r"bad.json: line 2: Expecting value"):
        load_documents([str(f)])


@pytest.mark.parametrize(("text", "message"), [
    ("- just\n- a list\n", "expected a mapping"),
    ("kind: Pod\nmetadata: {name: a}\n", "apiVersion not set"),
    ("apiVersion: v1\n", "apiVersion and kind not set"[len("apiVersion and "):]),
    ("apiVersion: v1\nkind: Pod\nmetadata: 3\n", "metadata must be a mapping"),
])
def test_bad_documents(tmp_path, text, message):
    f = tmp_path / "x.yaml"
    f.write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_documents([str(f)])


def test_missing_path():
    with pytest.raises(ManifestError, match=r'the path "nope\.yaml" does not exist'):
        load_documents(["nope.yaml"])
