"""Governance: the record of every promotion decision and every gate behind it."""
