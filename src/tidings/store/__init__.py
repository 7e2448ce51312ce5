"""Message stores: the protocol (``base``) and its backends (``sqlite``, later ``postgres``)."""
