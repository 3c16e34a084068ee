"""The fleet simulator: simulated devices speaking the agent protocol over MQTT, for the
control plane's tests and benchmarks. Not shipped behaviour of a real agent."""
