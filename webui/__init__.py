"""Presentation: the Gradio UI, the REST API and the command line. Thin by design."""
