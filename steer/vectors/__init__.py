"""Emotion vectors: the catalog of concepts, the story corpus, extraction (the paper's method),
storage and caching, read-outs of text, export (safetensors, GGUF) and inspection."""
