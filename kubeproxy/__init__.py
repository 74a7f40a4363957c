"""kubeproxy: Services + Endpoints → iptables NAT chains with the cluster's prefix (see README.md)."""
