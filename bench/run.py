"""`make bench`: every benchmark, with its default settings."""

from __future__ import annotations

import sys

from bench import fleet, pipeline

if __name__ == "__main__":
    fleet.main([])
    sys.argv = sys.argv[:1]
    pipeline.main()
