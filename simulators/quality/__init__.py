"""Alarm quality, measured: cases with known truth, run through the exact core, and judged.

`case` turns a `CaseSpec` (an order, two devices with routes, receivers, clocks, gaps) into the
messages nabij would receive and the ground truth (when the true distance was inside each ring,
the offender inside each zone); `families` draws specs from named families with randomised
parameters; `judge` scores the core's signals against the truth; `run` does many cases over
processes and `report` writes `docs/quality.md` (docs/quality.md says what is promised).
"""
