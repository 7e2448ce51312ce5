"""Message buses: the protocol (``base``) and its backends (``memory``, later ``redis``)."""
