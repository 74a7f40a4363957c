import urllib.request


def test_etcd_fixture_is_a_real_etcd(etcd):
    with urllib.request.urlopen(f"{etcd.url}/version", timeout=5) as r:
        assert b"etcdserver" in r.read()
