"""Redis: the job streams, the state store, dead letters and the events stream."""
