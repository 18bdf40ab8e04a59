"""The evidence trail: an append-only, tamper-evident log per writer (docs/evidence.md).

`chain` is the pure core (records, leaf and chain hashes, signed checkpoints), `bundle` builds and
verifies exported bundles without I/O, `store` is the Redis adapter, `keyfile` reads and makes the
Ed25519 signing key.
"""
