"""minik8s-ingress: the cluster's Ingresses served by an nginx this daemon starts and owns (docs/ingress.md)."""
