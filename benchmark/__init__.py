"""nint-bench core: models, schedules, the fit loop, metrics, the Parquet store and the runner."""

__version__ = "0.1.0"
