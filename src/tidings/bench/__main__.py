"""``python -m tidings.bench SCENARIO ...``: the benchmark without the ``tidings`` CLI."""

from tidings.bench.command import main

if __name__ == "__main__":
    raise SystemExit(main())
