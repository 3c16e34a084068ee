"""Model rollouts: waves with health gates, driven by one elected control-plane replica."""
