"""Where the client finds the apiserver."""

from __future__ import annotations

import pytest

from minik8s.client.config import ConfigError, load_config


def test_env_var_wins(tmp_path):
    (tmp_path / "config").write_text("server: http://127.0.0.1:1\nnamespace: team\n")
    cfg = load_config(env={"MINIK8S_SERVER": "http://10.0.0.1:6443/", "MINIK8S_HOME": str(tmp_path)})
    assert cfg.server == "http://10.0.0.1:6443"
    assert cfg.namespace == "team"  # the file still gives the default namespace
    assert cfg.source == "MINIK8S_SERVER"


def test_explicit_server_and_namespace_win(tmp_path):
    cfg = load_config(server="127.0.0.1:8080", namespace="x", env={"MINIK8S_SERVER": "http://a:1",
                                                                   "MINIK8S_HOME": str(tmp_path)})
    assert cfg.server == "http://127.0.0.1:8080" and cfg.namespace == "x"


def test_config_file(tmp_path):
    (tmp_path / "config").write_text("server: http://127.0.0.1:7000\n")
    cfg = load_config(env={"MINIK8S_HOME": str(tmp_path)})
    assert cfg.server == "http://127.0.0.1:7000" and cfg.namespace == "default"


def test_kubeconfig_current_context(tmp_path):
    (tmp_path / "kubeconfig").write_text("""
apiVersion: v1
kind: Config
current-context: b
clusters:
- name: ca
  cluster: {server: "http://127.0.0.1:1"}
- name: cb
  cluster: {server: "http://127.0.0.1:2"}
contexts:
- name: a
  context: {cluster: ca}
- name: b
  context: {cluster: cb}
""")
    assert load_config(env={"MINIK8S_HOME": str(tmp_path)}).server == "http://127.0.0.1:2"


def test_nothing_found_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"make up.*MINIK8S_SERVER"):
        load_config(env={"MINIK8S_HOME": str(tmp_path)})


def test_broken_file_is_a_config_error(tmp_path):
    (tmp_path / "config").write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(env={"MINIK8S_HOME": str(tmp_path)})
