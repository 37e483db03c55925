"""Jobs: the Kubernetes API, the manifest, the executors, watching and tracking Jobs."""
