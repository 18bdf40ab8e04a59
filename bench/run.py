"""`make bench`: every benchmark, with its default settings."""

from __future__ import annotations

from bench import fleet, pipeline

if __name__ == "__main__":
    fleet.main([])
    pipeline.main([])
    pipeline.main(["--rate", "5000"])
