"""`llamaforge demo`: the whole workflow, end to end, on a CPU with no network (workflow)."""
