"""Medbay approver: plans that need a person, asked over Telegram."""
