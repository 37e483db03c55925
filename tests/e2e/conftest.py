"""End-to-end tier: several `ksr run` processes against the real Redis and control plane."""
