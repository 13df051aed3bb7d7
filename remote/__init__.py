"""The execution layer: executors and the job-side code (model, train, predict, evaluate).

Imports `sessions` for data access, never `fibtui`.
"""
