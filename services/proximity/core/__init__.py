"""The pure proximity core: ingest, geodesy, hysteresis and the engine. No I/O, no clocks."""
