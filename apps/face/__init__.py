"""Face verification: detect, align, embed, and match against stored embeddings (SQLite)."""
