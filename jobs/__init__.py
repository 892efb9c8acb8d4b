"""Job coroutines: each takes the typed ctx (service.runtime.JobContext) and keyword arguments."""
