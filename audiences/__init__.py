"""Contacts, consent, registrations, import and segments."""
