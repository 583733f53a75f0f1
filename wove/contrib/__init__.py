"""Integrations of Wove with web frameworks; each subpackage imports its framework lazily."""
