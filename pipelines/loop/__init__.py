"""The curation loop: sandboxes, compiled artifacts, submission, the ledger and its witness, train/eval backends."""
