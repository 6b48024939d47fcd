"""Medbay executor: plans in, safe actions and verified results out."""
