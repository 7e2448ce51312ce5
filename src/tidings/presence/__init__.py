"""Presence and typing state: who is online, away or offline, and who types where."""
