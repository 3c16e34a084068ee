"""Engines behind one interface (agent.engines.base.Engine)."""
