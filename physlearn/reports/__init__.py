"""Run reports: ``report.html`` (self-contained) and PNG figures of one or several run
directories (`physlearn report`, and `physlearn train` at the end of every run)."""
