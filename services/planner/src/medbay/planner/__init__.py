"""Medbay planner: issues in, remediation plans out."""
