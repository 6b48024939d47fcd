"""Medbay."""
