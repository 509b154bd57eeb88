"""`"steps.base.model" = { size = [1, 2, 3] }`: a ladder of model sizes, as the paired values it sets. Size s gives
s times the recipe's `n_layer`, `n_head` and `d_model`, so depth and width grow together and the head size
(d_model / n_head) stays what the recipe chose."""

from __future__ import annotations

from llmrecipe.errors import RecipeError
from llmrecipe.recipe.recipe import Recipe
from llmrecipe.recipe.sweep import PairedAxis, SizeAxis, SweepConfig

SCALED = ("n_layer", "n_head", "d_model")


def expand_sizes(recipe: Recipe) -> SweepConfig:
    """The recipe's sweep with every size axis replaced by the paired n_layer / n_head / d_model values it means."""
    sweep = recipe.sweep
    assert sweep is not None
    space = {}
    for key, axis in sweep.space.items():
        if not isinstance(axis, SizeAxis):
            space[key] = axis
            continue
        parts = key.split(".")
        step = recipe.steps.get(parts[1]) if len(parts) == 3 and parts[0] == "steps" and parts[2] == "model" else None
        if step is None or step.kind != "pretrain":
            raise RecipeError(f'sweep.space."{key}" = {{ size = {axis.size} }}: a size ladder scales a pretrain step\'s '
                              'model; name it as "steps.NAME.model"')
        base = {name: getattr(step.model, name) for name in SCALED}
        values = {name: [base[name] * s for s in axis.size] for name in SCALED}
        space[f"{key}.n_layer"] = PairedAxis.model_validate(
            {"values": values["n_layer"], "with": {f"{key}.{name}": values[name] for name in SCALED[1:]}})
    return sweep.model_copy(update={"space": space})
