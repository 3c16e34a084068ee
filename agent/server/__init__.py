"""The agent's local REST server: OpenAI /v1/*, Ollama /api/*, health and metrics."""
