"""Emotion vectors: the catalog, the story corpus, extraction and storage."""
