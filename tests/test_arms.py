"""Every arm gets the same tuning budget: the cells of a space's ARMS, an equal share of the sampled
trials for each, each cell tuned by its own Optuna study, and budgets too small refused with the minimum."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest

from search_spaces import get_space, space_arms
from tuner import search
from tuner.arms import arm_plan
from tuner.errors import ConfigError
from tuner.optuna_study import study_name
from tuner.search import SearchRequest, prepare, run_search
from tuner.tune_build import arm_searcher

NO_WEIGHTS = {"weights": "none"}  # every space's grid without downloading ImageNet files


def _plan(space: str, num_samples: int | None, pins: dict | None = None, search: str = "optuna"):
    request = SearchRequest(space=space, dataset="breastmnist", num_samples=num_samples, search=search,
                            pins={**NO_WEIGHTS, **(pins or {})} if space != "ssl_vs_imagenet" else dict(pins or {}))
    module, configs = prepare(request)
    return request, arm_plan(space_arms(module), configs, request.num_samples, grid=search == "grid")


def test_the_studies_declare_the_factors_they_compare():
    assert space_arms(get_space("quick")) == ("head",)
    assert space_arms(get_space("convskip_unfreeze")) == ("head", "unfreeze")
    assert space_arms(get_space("finetune_strategies")) == ("strategy", "backbone")
    assert "weights" in space_arms(get_space("ssl_vs_imagenet"))
    assert space_arms(get_space("breast_quality")) == ()


def test_cells_are_the_levels_the_space_reaches_narrowed_by_pins():
    _, plan = _plan("convskip_unfreeze", 18)
    assert len(plan.cells) == 3 * 6 and plan.share == 1
    assert plan.label(plan.cells[0]) == "head=linear, unfreeze=0"
    _, plan = _plan("finetune_strategies", 48)
    assert len(plan.cells) == 8 * 3 and plan.share == 2
    _, plan = _plan("quick", 4, {"head": ["linear", "conv"]})
    assert [plan.label(c) for c in plan.cells] == ["head=linear", "head=conv"] and plan.share == 2
    _, plan = _plan("quick", 5, {"head": "conv"})
    assert plan.cells == (("conv",),) and plan.share == 5


def test_a_budget_smaller_than_the_cells_is_refused_with_the_minimum():
    with pytest.raises(ConfigError, match=r"--num-samples 10 is smaller than the 24 arms .*strategy x backbone.*"
                                          r"--num-samples 24"):
        _plan("finetune_strategies", 10)
    with pytest.raises(ConfigError, match=r"--num-samples 2 is smaller than the 3 arms.*--num-samples 3"):
        _plan("quick", 2)


def test_a_budget_that_does_not_split_equally_is_refused_with_the_nearest_that_do():
    with pytest.raises(ConfigError, match=r"--num-samples 8 does not split equally over the 3 arms.*6 or 9"):
        _plan("quick", 8)


def test_the_default_budget_is_the_smallest_equal_split_of_at_least_eight():
    assert _plan("quick", None)[1].budget == 9
    assert _plan("finetune_strategies", None)[1].budget == 24
    assert _plan("breast_quality", None)[1].budget == 8  # no arms: one cell, the whole space


def test_a_grid_search_is_not_split():
    _, plan = _plan("quick", None, search="grid")
    assert plan.share is None and len(plan.cells) == 3


def test_too_small_a_budget_is_refused_before_ray_starts(tmp_path, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(search, "init_ray", no_ray)
    with pytest.raises(ConfigError, match="--num-samples 3"):
        run_search(SearchRequest(space="quick", dataset="breastmnist", num_samples=2, storage=str(tmp_path)))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("space", "budget"), [("quick", 9), ("convskip_unfreeze", 36),
                                                ("finetune_strategies", 48), ("ssl_vs_imagenet", 6)])
def test_each_arm_gets_its_equal_share_from_its_own_study(space, budget, tmp_path, monkeypatch):
    """The searcher hands out the whole budget, each cell exactly its share, each cell's values pinned
    (never sampled by its study), the other knobs sampled by that cell's own persisted study; then it is
    finished."""
    monkeypatch.delenv("MEDTUNE_SSL_ENCODER", raising=False)
    request, plan = _plan(space, budget)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = arm_searcher(request, plan, "exp", url)
    configs = [searcher.suggest(f"t{i}") for i in range(budget)]
    assert searcher.suggest("one-more") == "FINISHED"
    shares = Counter(plan.label_of(config) for config in configs)
    assert set(shares) == {plan.label(cell) for cell in plan.cells}
    assert set(shares.values()) == {plan.share}
    # round-robin: the first len(cells) trials cover every cell once
    assert len({plan.label_of(c) for c in configs[:len(plan.cells)]}) == len(plan.cells)
    for cell in plan.cells:
        study = optuna.load_study(study_name=study_name("exp", plan.label(cell)), storage=url)
        assert len(study.trials) == plan.share
        assert all(not set(plan.factors) & set(t.params) for t in study.trials)
    assert plan.trials_per_arm(configs) == {plan.label(cell): plan.share for cell in plan.cells}
