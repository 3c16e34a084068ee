"""One module per resource, each with a `router`."""
