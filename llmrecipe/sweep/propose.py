"""What to try next. Grid and random sweeps know every trial before the first runs; TPE asks Optuna for a batch of
`parallel` trials at a time and tells it the batch's results, in trial order, before asking again, so the same
seed proposes the same trials whatever order the trials finish in."""

from __future__ import annotations

from typing import Any, Iterator

from llmrecipe.recipe.sweep import LogUniformAxis, PairedAxis, SweepConfig, UniformAxis
from llmrecipe.sweep.space import Trial, axis_choices, grid_trials, random_trials

Results = dict[int, dict[str, Any]]
"""Trial index -> its result (state, metrics)."""


class FixedTrials:
    """Grid or random: one batch holding every trial."""

    def __init__(self, trials: list[Trial]):
        self.trials = trials

    def batches(self) -> Iterator[list[Trial]]:
        yield self.trials

    def tell(self, batch: list[Trial], results: Results) -> None:
        pass


class TpeTrials:
    """Optuna's TPE sampler, seeded; a failed trial is told as failed, so the sampler avoids its region."""

    def __init__(self, sweep: SweepConfig, seed: int, metric: str):
        import optuna

        from llmrecipe.sweep.early_stop import make_pruner

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.sweep, self.metric = sweep, metric
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, (sweep.samples or 0) // 3)))
        self.study = optuna.create_study(direction="minimize" if sweep.goal == "min" else "maximize", sampler=sampler,
                                         pruner=make_pruner(sweep.early_stop))
        self.asked: dict[int, Any] = {}
        """Trial index -> its Optuna trial (early stopping reports to it)."""

    def batches(self) -> Iterator[list[Trial]]:
        index, total = 0, self.sweep.samples or 0
        while index < total:
            batch = []
            for _ in range(min(self.sweep.parallel, total - index)):
                asked = self.study.ask()
                self.asked[index] = asked
                batch.append(Trial(index, self._suggest(asked)))
                index += 1
            yield batch

    def _suggest(self, asked: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, axis in self.sweep.space.items():
            if isinstance(axis, LogUniformAxis):
                values[key] = asked.suggest_float(key, *axis.log_uniform, log=True)
            elif isinstance(axis, UniformAxis):
                values[key] = asked.suggest_float(key, *axis.uniform)
            else:  # listed values: a choice of position, so paired lists and mixed types work alike
                choices = axis_choices(axis)
                chosen = choices[asked.suggest_categorical(key, list(range(len(choices))))]
                values.update({(key if name == "__axis__" else name): value for name, value in chosen.items()})
        return values

    def tell(self, batch: list[Trial], results: Results) -> None:
        for trial in sorted(batch, key=lambda t: t.index):
            result = results.get(trial.index)
            value = (result or {}).get("metrics", {}).get(self.metric)
            if result is None:  # interrupted: it runs again next time, and the sweep stops here
                continue
            if result["state"] == "pruned":
                self.study.tell(self.asked[trial.index], state=self.optuna.trial.TrialState.PRUNED)
            elif result["state"] != "done" or value is None:
                self.study.tell(self.asked[trial.index], state=self.optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(self.asked[trial.index], float(value))


def proposer_for(sweep: SweepConfig, seed: int, metric: str):
    if sweep.method == "grid":
        return FixedTrials(grid_trials(sweep.space))
    if sweep.method == "random":
        return FixedTrials(random_trials(sweep, seed))
    return TpeTrials(sweep, seed, metric)


def corner_trials(sweep: SweepConfig) -> list[Trial]:
    """Trials that between them set every listed value and both ends of every range, the other axes at their first
    value: what a TPE sweep checks before running, since its trials are chosen as it goes."""
    first = {key: _first(key, axis) for key, axis in sweep.space.items()}
    trials: list[Trial] = []
    for key, axis in sweep.space.items():
        if isinstance(axis, (LogUniformAxis, UniformAxis)):
            options = [{key: bound} for bound in (axis.log_uniform if isinstance(axis, LogUniformAxis) else axis.uniform)]
        else:
            options = [{(key if n == "__axis__" else n): v for n, v in c.items()} for c in axis_choices(axis)]
        for option in options:
            values = {k: v for other in first.values() for k, v in other.items()}
            if isinstance(axis, PairedAxis):
                values = {k: v for k, v in values.items() if k not in axis.with_}
            trials.append(Trial(len(trials), {**values, **option}))
    return trials


def _first(key: str, axis: Any) -> dict[str, Any]:
    if isinstance(axis, LogUniformAxis):
        return {key: axis.log_uniform[0]}
    if isinstance(axis, UniformAxis):
        return {key: axis.uniform[0]}
    return {(key if n == "__axis__" else n): v for n, v in axis_choices(axis)[0].items()}
