"""The Presto web app (Gradio): layout in ui.py, endpoints in handlers.py, model access in engine.py."""
