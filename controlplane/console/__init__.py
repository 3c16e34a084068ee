"""The operator's console: `edgefleet-cp` commands that are HTTP clients of the API (like
kubectl), with a context file holding each control plane's URL and token."""

from controlplane.console.commands import add_console_parsers

__all__ = ["add_console_parsers"]
