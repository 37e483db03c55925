"""Integration tier: real redis-server and real kube-apiserver, one each per test run."""
