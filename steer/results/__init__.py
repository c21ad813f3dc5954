"""From results to people: statistics (stats.py), a run's tables (tables.py), figures (plots.py)
and reports (report.py). Pure functions of DataFrames; the run directory writes what they make."""
