"""Atelier's engine: no gradio, no fastapi, nothing heavy at import time."""
