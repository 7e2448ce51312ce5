"""``tidings bench``: measure Tidings against a bare aiohttp broadcast server.

Modules: :mod:`~tidings_tools.bench.command` (the CLI), :mod:`~tidings_tools.bench.runner`
(the coordinator), :mod:`~tidings_tools.bench.loadgen` (worker processes),
:mod:`~tidings_tools.bench.provision` (accounts and conversations over HTTP),
:mod:`~tidings_tools.bench.servers` (starting servers, /proc figures),
:mod:`~tidings_tools.bench.cluster` (nodes on a fresh PostgreSQL database and Redis) and
:mod:`~tidings_tools.bench.baseline` (the yardstick server).
"""
