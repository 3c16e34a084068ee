"""The operator dashboard: server-rendered pages, a token login, hand-drawn SVG charts."""

from controlplane.dashboard.routes import install_dashboard

__all__ = ["install_dashboard"]
