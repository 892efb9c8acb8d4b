"""Job coroutines. Each takes the typed ctx (jobs.context.JobContext) and keyword arguments."""
