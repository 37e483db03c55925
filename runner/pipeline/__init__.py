"""The job pipeline: the leader loop, dispatching one entry, messages and policy."""
