"""Planning before any GPU hour: the model and hardware catalog, the training setup, the memory model, the
estimator (time, memory, price), the planner that picks a setup that fits, and the serving and Mac estimates.
Pure: nothing here writes files or imports torch."""
