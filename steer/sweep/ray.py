"""`--backend ray`: the plan's units spread over a Ray cluster.

Each Ray actor is a `Worker` (worker.py) with its own copy of the model (one GPU per actor where
the cluster has GPUs). The driver hands every actor one unit at a time and writes each result into
the run directory as it arrives, so resume and failure rules are those of the local backend.
Workers need steer installed and the config's files (prompt files, vector files, suites given by
path) at the same paths, e.g. on a shared filesystem; payloads come back to the driver through
Ray's object store, so the run directory need not be shared.
"""

from __future__ import annotations

import os


class _Actor:
    def __init__(self, cfg_json: dict, threads: int):
        import torch

        from steer.sweep.config import config_model
        from steer.sweep.plan import make_plan
        from steer.sweep.worker import Worker

        if threads > 0:
            torch.set_num_threads(threads)
        cfg = config_model().model_validate(cfg_json)  # checked by the driver; paths absolute
        self.worker = Worker(cfg, make_plan(cfg), quiet=True)

    def info(self) -> dict:
        return {**self.worker.info(), "host": os.uname().nodename, "pid": os.getpid()}

    def run(self, unit):
        return self.worker.run_unit_safely(unit)


def run_ray(cfg, pending, on_result, address: str | None = None,
            workers: int | None = None, quiet: bool = True) -> dict:
    """Run `pending` units on Ray; `on_result(unit, status, payload)` is called on the driver as
    each finishes. Connects to `address` ("auto", "ray://host:port", ...) or, when None, starts a
    local cluster. Returns the first worker's description, plus every worker's host."""
    try:
        import ray
    except ImportError:
        from steer.errors import SteerError

        raise SteerError("--backend ray needs Ray: pip install 'ray[default]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs = {"include_dashboard": False, "log_to_driver": not quiet,
                  "configure_logging": not quiet}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(_node_ip_address="127.0.0.1", **kwargs)
    try:
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
        n = workers or gpus or 1
        threads = max(1, cpus // n)
        opts = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": threads}
        actor_cls = ray.remote(**opts)(_Actor)
        cfg_json = cfg.model_dump(mode="json")
        actors = [actor_cls.remote(cfg_json, 0 if gpus else threads) for _ in range(n)]
        infos = ray.get([a.info.remote() for a in actors])
        queue = list(pending)
        running = {}
        for a in actors:
            if queue:
                unit = queue.pop(0)
                running[a.run.remote(unit)] = (a, unit)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ref = ready[0]
            actor, unit = running.pop(ref)
            try:
                status, payload = ray.get(ref)
            except ray.exceptions.RayError as e:  # the actor died (e.g. killed, out of memory)
                status, payload = "error", {"error": f"{type(e).__name__}: {e}",
                                            "traceback": ""}
                actors.remove(actor)
                actor = None
            on_result(unit, status, payload)
            if actor is not None and queue:
                nxt = queue.pop(0)
                running[actor.run.remote(nxt)] = (actor, nxt)
            elif actor is None and queue and not running and not actors:
                from steer.errors import SteerError

                raise SteerError("every Ray worker died; finished cells are saved")
        info = dict(ray.get(actors[0].info.remote()) if actors else infos[0])
        info["workers"] = [{"host": i["host"], "pid": i["pid"]} for i in infos]
        return info
    finally:
        if started:
            ray.shutdown()
