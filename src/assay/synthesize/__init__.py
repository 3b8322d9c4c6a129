"""Stage III: AI-generated data (LLM backends, Self-Instruct, Evol-Instruct, OSS-Instruct, textbooks)."""
