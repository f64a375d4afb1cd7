"""Speaker embeddings, online clustering and enrollment (pure, synchronous)."""
