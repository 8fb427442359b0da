"""Serving: the FastAPI decision API. Never imports training or torch."""
