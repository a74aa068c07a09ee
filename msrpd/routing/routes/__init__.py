"""The bundled routing scripts; as shipped they run compiled (routing/script.py)."""
