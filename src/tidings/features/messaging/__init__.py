"""What people expect of a chat: edits, delete for everyone, reactions
(``kinds.py``), hidden messages and per-member settings (``routes.py``),
group settings and the retention purge (``retention.py``).

The stream's current view (``?view=current``) and the store's side of each
(targets, redaction, counts) are the core's: every feature reads the same
seq stream.
"""
