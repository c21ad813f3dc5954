"""steer: activation-steering experiments with emotion vectors on open language models.

    import steer
    m   = steer.load_model()                                   # the embedded SmolLM2-135M
    ev  = steer.emotion_vectors(m)                             # 171 emotions, cached
    iv  = steer.Intervention(ev["desperate"] - ev["calm"], layer=12, scale=0.1)
    out = steer.generate(m, ["The tests keep failing."], steer=[iv], vectors=ev)
    df  = steer.readout(m, ev, out.texts, layer=16)            # one column per emotion
    run = steer.run(steer.load_config("configs/desperation.yaml"))

Names are imported on first use, so `import steer` (and the CLI's `steer validate`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # the model
    "load_model": "steer.lm.load",
    "SteerModel": "steer.lm.model",
    # vectors and directions
    "emotion_vectors": "steer.vectors.store",
    "EmotionVectors": "steer.vectors.store",
    "Direction": "steer.lm.directions",
    "parse_expression": "steer.lm.directions",
    # steering, generating, reading
    "Intervention": "steer.lm.steering",
    "steering": "steer.lm.steering",
    "capture": "steer.lm.steering",
    "generate": "steer.lm.decode",
    "Generation": "steer.lm.decode",
    "readout": "steer.vectors.readout",
    "trace": "steer.vectors.readout",
    # experiments
    "load_config": "steer.sweep.config",
    "ExperimentConfig": "steer.sweep.config",
    "plan_work": "steer.sweep.run",
    "Work": "steer.sweep.run",
    "run": "steer.sweep.run",
    "open_run": "steer.sweep.rundir",
    "Run": "steer.sweep.rundir",
    "Manifest": "steer.sweep.rundir",
    "list_runs": "steer.results.runs",
    # task types
    "register_task": "steer.tasks",
    "task_types": "steer.tasks",
    "TaskSpec": "steer.tasks.base",
    "Context": "steer.tasks.base",
    "Sample": "steer.tasks.base",
    "Condition": "steer.tasks.base",
    "UNSTEERED": "steer.tasks.base",
    "Extra": "steer.tasks.base",
    # errors
    "SteerError": "steer.errors",
    "InputError": "steer.errors",
    "ConfigError": "steer.errors",
}

__all__ = [  # the same names as _EXPORTS (tests/test_api.py checks)
    "__version__",
    "load_model", "SteerModel",
    "emotion_vectors", "EmotionVectors", "Direction", "parse_expression",
    "Intervention", "steering", "capture", "generate", "Generation", "readout", "trace",
    "load_config", "ExperimentConfig", "plan_work", "Work", "run", "open_run", "Run", "Manifest",
    "list_runs",
    "register_task", "task_types", "TaskSpec", "Context", "Sample", "Condition", "UNSTEERED",
    "Extra",
    "SteerError", "InputError", "ConfigError",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'steer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from steer.errors import ConfigError, InputError, SteerError
    from steer.lm.decode import Generation, generate
    from steer.lm.directions import Direction, parse_expression
    from steer.lm.load import load_model
    from steer.lm.model import SteerModel
    from steer.lm.steering import Intervention, capture, steering
    from steer.results.runs import list_runs
    from steer.sweep.config import ExperimentConfig, load_config
    from steer.sweep.run import Work, plan_work, run
    from steer.sweep.rundir import Manifest, Run, open_run
    from steer.tasks import register_task, task_types
    from steer.tasks.base import UNSTEERED, Condition, Context, Extra, Sample, TaskSpec
    from steer.vectors.readout import readout, trace
    from steer.vectors.store import EmotionVectors, emotion_vectors
