"""Settings and database engine of the control plane."""
