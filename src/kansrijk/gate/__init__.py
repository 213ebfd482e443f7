"""The release gate: the only code that writes to ``released/``. Requests in, verdicts and noisy or checked
numbers out, every release recorded in a hash-chained ledger together with the privacy budget it spent."""
