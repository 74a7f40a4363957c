"""Cluster DNS: answers ``SVC.NS.svc.DOMAIN`` from the Service/Endpoints caches (docs/dns.md)."""
