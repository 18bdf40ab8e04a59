"""Record and replay: device traffic as JSON lines, run again through the exact core.

`records` reads and writes the log lines, `whatif` changes a config for a replay (`--set`),
`timeline` runs the lines through the proximity core and a gateway book, `cli` wires
`nabij record` and `nabij replay`. Replay sits beside both services because it drives both cores.
"""
