"""The local Kubernetes test bed: build the binaries from source, run them on loopback."""
