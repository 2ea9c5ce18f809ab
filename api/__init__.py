"""HTTP API: OpenAI-compatible chat and a REST API for questions and documents (see README)."""
