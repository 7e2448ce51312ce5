"""``tidings bench``: measure Tidings against a bare aiohttp broadcast server.

Modules: :mod:`~tidings.bench.command` (the CLI), :mod:`~tidings.bench.runner`
(the coordinator), :mod:`~tidings.bench.loadgen` (worker processes),
:mod:`~tidings.bench.provision` (accounts and conversations over HTTP),
:mod:`~tidings.bench.servers` (starting servers, /proc figures),
:mod:`~tidings.bench.cluster` (nodes on a fresh PostgreSQL database and Redis) and
:mod:`~tidings.bench.baseline` (the yardstick server).
"""
