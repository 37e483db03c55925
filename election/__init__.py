"""Leader election: a lock protocol, its Lease and Redis backends, and the elector state machine."""
