"""Step 4: what happens to an order once a task (or the embedded relay) picks it up."""
