"""Fleet operations past the model: agent releases, remote agent settings and logs."""
