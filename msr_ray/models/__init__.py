"""Model loading, embedded and tiny models, prompts, batched generation, Yes/No scoring (no Ray)."""
