"""Glue for other frameworks, one module each; every one imports its framework lazily."""
