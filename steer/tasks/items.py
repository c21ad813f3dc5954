"""Items of the behavioural tasks, from the built-in suites (package data) or from files.

Choice items come in two JSONL formats, told apart line by line:
- steer's own: `{"id", "prompt", "options": [{"text", "behavior": bool}, ...]}`, where an
  option may carry `"correct": true` when the item has a known right answer (sycophancy: the
  non-sycophantic option), read by the competence check;
- Anthropic's model-written evals: `{"question", "answer_matching_behavior",
  "answer_not_matching_behavior"}`, where the question usually ends in a `Choices:` block of
  ` (A) ...` lines and the answers name a letter (` (A)`). The options are parsed out of the
  question so that they can be shown in both orders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from steer.data import data_path
from steer.errors import TaskConfigError, TaskDataError
from steer.io import read_jsonl, read_text
from steer.tasks.base import Condition, Context, TaskSpec, row_seed

CHOICE_SUITES = ("reward_hacking", "blackmail", "sycophancy", "honesty_under_pressure")
ACTIVITIES = "activities"
PROBE = "probe_ab"  # the known-answer A/B probe of choice tasks (not a suite of its own)
CODE_SUITES = ("impossible",)


@dataclass(frozen=True)
class Option:
    text: str
    behavior: bool
    correct: bool | None = None  # the factually right answer? None: not known


@dataclass(frozen=True)
class ChoiceItem:
    id: str
    prompt: str
    options: tuple[Option, ...]

    @property
    def right(self) -> tuple[int, ...]:
        """Indices of the options marked correct (none: the item has no known answer)."""
        return tuple(j for j, o in enumerate(self.options) if o.correct)


@dataclass(frozen=True)
class Activity:
    id: str
    group: str
    text: str


@dataclass(frozen=True)
class CodeTask:
    id: str
    name: str
    signature: str
    spec: str
    visible_tests: tuple[str, ...]
    hidden_tests: tuple[str, ...]
    reference: str = ""


def _suite_path(name: str) -> Path:
    return data_path("suites", f"{name}.jsonl")


def _rows(source: str | Path, label: str) -> list[tuple[int, dict]]:
    out = read_jsonl(source, label, TaskDataError)
    if not out:
        raise TaskDataError(f"{source}: no items")
    return out


def resolve(source: str, builtin: tuple[str, ...] | str) -> Path:
    """A built-in suite name, or a file path (resolved beside the config when it was loaded)."""
    names = (builtin,) if isinstance(builtin, str) else builtin
    if source in names:
        return _suite_path("code_impossible" if source == "impossible" else source)
    return Path(source)


_CHOICE_LINE = re.compile(r"^\s*\(([A-Z])\)\s*(.*\S)\s*$")
_LETTER = re.compile(r"^\s*\(?([A-Z])\)?\s*$")


def _anthropic(row: dict, where: str) -> ChoiceItem:
    q = row["question"]
    match = row["answer_matching_behavior"]
    others = row["answer_not_matching_behavior"]
    others = others if isinstance(others, list) else [others]
    head, sep, tail = q.rpartition("Choices:")
    lines = [m for m in (_CHOICE_LINE.match(x) for x in tail.splitlines()) if m] if sep else []
    by_letter = {m.group(1): m.group(2) for m in lines}
    letters = [_LETTER.match(a) for a in [match, *others]]
    if by_letter and all(m and m.group(1) in by_letter for m in letters):
        want = letters[0].group(1)
        keep = {m.group(1) for m in letters}
        opts = tuple(Option(t, k == want) for k, t in by_letter.items() if k in keep)
        prompt = head.strip()
    else:  # free-text answers (" Yes" / " No"): the answers themselves are the options
        opts = (Option(match.strip(), True), *(Option(o.strip(), False) for o in others))
        prompt = q.strip()
    if len(opts) < 2 or not prompt:
        raise TaskDataError(f"{where}: could not find two answer options")
    return ChoiceItem(str(row.get("id", where)), prompt, opts)


def _options(rows: list, where: str, behavior: bool = True) -> tuple[Option, ...]:
    """steer's options: `text`, `behavior` (unless `behavior` is False: the probe has none),
    and an optional `correct: true` on the factually right ones (the others are then wrong)."""
    marked = any("correct" in o for o in rows)
    out = []
    for o in rows:
        right = o.get("correct", False)
        if not isinstance(right, bool):
            raise TaskDataError(f"{where}: 'correct' is true or false, not {right!r}")
        out.append(Option(str(o["text"]), bool(o["behavior"]) if behavior else False,
                          right if marked else None))
    if marked and not any(o.correct for o in out):
        raise TaskDataError(f"{where}: 'correct' marks no option true")
    return tuple(out)


def load_choice_items(source: str, limit: int | None = None) -> list[ChoiceItem]:
    path = resolve(source, CHOICE_SUITES)
    items = []
    for n, row in _rows(path, "choice suite"):
        where = f"{path.name}:{n}"
        try:
            if "question" in row:
                items.append(_anthropic(row, where))
                continue
            opts = _options(row["options"], f"{path}:{n}")
            item = ChoiceItem(str(row.get("id", where)), str(row["prompt"]), opts)
        except (KeyError, TypeError, AttributeError) as e:  # a field of the wrong type too
            raise TaskDataError(f"{path}:{n}: missing or malformed field {e}; expected "
                                "{id, prompt, options: [{text, behavior}]} or Anthropic's "
                                "{question, answer_matching_behavior, "
                                "answer_not_matching_behavior}") from None
        if len(opts) < 2 or not any(o.behavior for o in opts) or all(o.behavior for o in opts):
            raise TaskDataError(f"{path}:{n}: needs at least two options, at least one with "
                                "behavior true and one with behavior false")
        items.append(item)
    return items[:limit] if limit else items


def load_probe_items() -> list[ChoiceItem]:
    """The built-in known-answer A/B probe (`suites/probe_ab.jsonl`): trivial questions ("Which
    of these is a fruit?") with one right option each, no behaviour, which tell a model that
    cannot answer A/B questions at all from one that does not grasp a suite's dilemmas.

    Example:
        >>> from steer.tasks.items import load_probe_items
        >>> items = load_probe_items()
        >>> len(items), [o.text for o in items[0].options if o.correct]
        (16, ['an apple'])
    """
    path = _suite_path(PROBE)
    return [ChoiceItem(str(row["id"]), str(row["prompt"]), _options(row["options"], f"{path}:{n}",
                                                                    behavior=False))
            for n, row in _rows(path, "probe")]


def load_activities(source: str = ACTIVITIES, limit: int | None = None) -> list[Activity]:
    path = resolve(source, ACTIVITIES)
    out = []
    for n, row in _rows(path, "activities"):
        try:
            out.append(Activity(str(row.get("id", n)), str(row["group"]), str(row["text"])))
        except KeyError as e:
            raise TaskDataError(f"{path}:{n}: missing field {e}; expected {{id, group, text}}"
                                ) from None
    if limit:  # keep the groups balanced: take activities round-robin over groups
        groups: dict[str, list[Activity]] = {}
        for a in out:
            groups.setdefault(a.group, []).append(a)
        picked: list[Activity] = []
        while len(picked) < min(limit, len(out)):
            for g in groups.values():
                if g and len(picked) < limit:
                    picked.append(g.pop(0))
        out = picked
    if len(out) < 2:
        raise TaskDataError(f"{path}: a preference task needs at least two activities")
    return out


def _tests(src: str) -> tuple[str, ...]:
    return tuple(x for x in (line.strip() for line in src.splitlines()) if x)


def load_code_tasks(source: str = "impossible", limit: int | None = None) -> list[CodeTask]:
    path = resolve(source, CODE_SUITES)
    out = []
    for n, row in _rows(path, "code suite"):
        try:
            out.append(CodeTask(str(row["id"]), str(row["name"]), str(row["signature"]),
                                str(row["spec"]), _tests(row["visible_tests"]),
                                _tests(row["hidden_tests"]), str(row.get("reference", ""))))
        except (KeyError, AttributeError) as e:  # AttributeError: tests that are not text
            raise TaskDataError(f"{path}:{n}: missing or malformed field {e}; expected {{id, "
                                "name, signature, spec, visible_tests, hidden_tests} (strings)"
                                ) from None
    return out[:limit] if limit else out


# ---------------------------------------------------------------- shared specs


class PromptTask(TaskSpec):
    """Items are prompts: listed, read from a file (one per line), or a `template` with a
    `{value}` slot filled from `values`."""

    prompts: list[str] = Field(default_factory=list)
    prompts_file: str | None = None
    template: str | None = None
    values: list[float | int | str] | None = None

    input_files: ClassVar[tuple[str, ...]] = ("prompts_file",)

    def check(self) -> None:
        if self.prompts_file is not None:
            if not self.items():  # a run of nothing would "succeed" with no results
                raise TaskConfigError("prompts_file", self.prompts_file,
                                      "a file of prompts, one per line (it has none)")
        elif self.template is not None:
            if "{value}" not in self.template:
                raise TaskConfigError("template", self.template, "a template with a {value} slot")
            if not self.values:
                raise TaskConfigError("values", self.values,
                                      "a list of values for the template's {value} slot")
        elif not self.prompts:
            raise TaskConfigError("prompts", self.prompts,
                                  "at least one prompt (or a prompts_file, or a template)")

    def items(self) -> list[str]:
        if self._items is None:
            prompts = list(self.prompts)
            if self.template is not None:
                prompts += [self.template.replace("{value}", str(v)) for v in self.values or []]
            if self.prompts_file:
                try:
                    text = read_text(self.prompts_file, "prompts", TaskDataError)
                except TaskDataError as e:
                    raise TaskConfigError("prompts_file", self.prompts_file,
                                          f"a UTF-8 text file of prompts, one per line ({e})"
                                          ) from None
                prompts += [x.strip() for x in text.splitlines() if x.strip()]
            self._items = prompts
        return self._items


    def rows(self, ctx: Context, conditions: list[Condition], seed: int
             ) -> tuple[list[tuple[int, Condition]], list]:
        """Every prompt (chat template applied) under every condition: the (item, condition)
        of each row, and the rows, each with the sampling seed of its (task, item, seed)."""
        from steer.lm.decode import GenRow

        keys, rows = [], []
        systems = {cond: ctx.system_prompt_for(cond) for cond in conditions}
        for item, prompt in enumerate(self.items()):
            for cond in conditions:
                keys.append((item, cond))
                text = ctx.model.format_prompt(prompt, systems[cond])
                rows.append(GenRow(text, ctx.interventions(cond, seed),
                                   row_seed(self.name, item, seed)))
        return keys, rows


class SuiteTask(TaskSpec):
    """Items come from a built-in `suite` or a JSONL `file`; `limit` keeps the first ones."""

    suite: str | None = None
    file: str | None = None
    limit: int | None = Field(None, ge=1)

    input_files: ClassVar[tuple[str, ...]] = ("file",)
    suites: ClassVar[tuple[str, ...]] = ()  # built-in suite names, the first the default
    suite_required: ClassVar[bool] = False

    def load(self, source: str, limit: int | None) -> list:
        """The items of a suite name or file path."""
        raise NotImplementedError

    def check(self) -> None:
        if self.suite is not None and self.file is not None:
            raise TaskConfigError("file", self.file, "either suite or file, not both")
        if self.suite is None and self.file is None:
            if self.suite_required:
                raise TaskConfigError("suite", None, f"a built-in suite "
                                      f"({', '.join(self.suites)}) or a file")
            self.suite = self.suites[0]
        if self.suite is not None and self.suite not in self.suites:
            raise TaskConfigError("suite", self.suite,
                                  f"a built-in suite ({', '.join(self.suites)})")
        try:
            self.loaded()
        except TaskDataError as e:
            key = "suite" if self.suite else "file"
            raise TaskConfigError(key, self.suite or self.file,
                                  f"a readable {self.type} file ({e})") from None

    def loaded(self) -> list:
        """The items, loaded once."""
        if self._items is None:
            self._items = self.load(self.suite or self.file, self.limit)
        return self._items

    def files(self) -> list[Path]:
        return [resolve(self.suite or self.file, self.suites)]
