"""The append-only audit log: who did what, to what, from where, with what result."""
