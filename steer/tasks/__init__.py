"""Task types: one module each (generate, readout, choice, preference, code), one protocol
(base.py), and this registry, from which the config's `tasks` union is built.

Adding a task type touches this package only: write a module with a `TaskSpec` subclass and
register it here, or call `steer.register_task(Spec)` from your own code.
"""

from __future__ import annotations

from steer.tasks.base import TaskSpec
from steer.tasks.choice import ChoiceSpec
from steer.tasks.code import CodeSpec
from steer.tasks.generate import GenerateSpec
from steer.tasks.preference import PreferenceSpec
from steer.tasks.readout import ReadoutSpec
from steer.tasks.struggle import StruggleSpec

DEFAULT_TYPE = "generate"  # a task without `type` generates
_REGISTRY: dict[str, type[TaskSpec]] = {}


def register_task(spec: type[TaskSpec]) -> type[TaskSpec]:
    """Add a task type: `spec` is a TaskSpec subclass whose `type` field is a literal with a
    default (`type: Literal["echo"] = "echo"`). Configs can use it from then on. Returns `spec`,
    so it works as a class decorator.

    Example:
        >>> from typing import Literal
        >>> import steer
        >>> @steer.register_task
        ... class EchoSpec(steer.TaskSpec):
        ...     type: Literal["echo"] = "echo"
        ...     prompts: list[str]
        ...     def items(self): return self.prompts
        >>> "echo" in steer.task_types()
        True
    """
    if not (isinstance(spec, type) and issubclass(spec, TaskSpec)):
        raise TypeError(f"a task type is a TaskSpec subclass, got {spec!r}")
    try:
        spec.model_rebuild(raise_errors=True)
    except Exception as e:
        raise TypeError(f"{spec.__name__}: its fields cannot be resolved ({e})") from None
    name = spec.model_fields["type"].default
    if not isinstance(name, str) or not name:
        raise TypeError(f"{spec.__name__}: its `type` field needs a literal default")
    _REGISTRY[name] = spec
    return spec


def task_types() -> dict[str, type[TaskSpec]]:
    """The registered task types, by name.

    Example:
        >>> import steer
        >>> {"generate", "readout", "choice", "preference", "code"} <= set(steer.task_types())
        True
    """
    return dict(_REGISTRY)


for _spec in (GenerateSpec, ReadoutSpec, ChoiceSpec, PreferenceSpec, CodeSpec, StruggleSpec):
    register_task(_spec)
