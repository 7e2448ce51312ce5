"""Tidings' development tools, outside the server package: the benchmarks
(``tidings bench``), the reconnect-storm simulator (``tidings sim``) and the
fault-injecting TCP proxy with its round-robin balancer. ``tidings`` finds
them when this distribution is installed (the development install does)."""
