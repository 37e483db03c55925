"""kube-stream-runner: Redis Streams job messages in, Kubernetes Jobs out."""

__version__ = "0.1.0"
