"""Experiments: the config (config.py), the plan of cells and units (plan.py), their execution
here (worker.py) or on Ray (ray.py), the run directory (rundir.py), and the run itself (run.py,
which reads top to bottom)."""
