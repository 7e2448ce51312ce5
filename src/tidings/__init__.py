"""Tidings: a self-hostable real-time chat backend.

The package is laid out by capability, with dependencies pointing inward:

- ``tidings.core``: the domain (conversations, seq, cursors, policies); no sockets, no SQL.
- ``tidings.store`` / ``tidings.bus``: backend protocols and their implementations.
- ``tidings.gateway`` (WebSocket) and ``tidings.http`` (REST): the transports.
- ``tidings.app``: the composition root that wires them together.
- ``tidings.cli``: the ``tidings`` command. The client SDK (``tidings_client``, in
  ``sdk/python``) and the development tools (``tidings_tools``, in ``tools``) are
  distributions of their own: the server imports neither.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
