"""A fault harness: the real stack as processes, load with a client-side ledger, faults
injected and healed, and the ledger checked against the database (docs/faults.md)."""
