"""The fleet client: MQTT link, enrollment, rollout executor, staging, slots, outbox, commands,
telemetry, self-update and supervisor. Thread and lock rules: docs/agent.md ("Fleet side: threads
and locks")."""
