"""One schema for every input, tested with generated values (hypothesis): for every declared key, a
trial's ``--set`` keys, the pretraining parameters and every command-line option, any value outside
its declaration is refused with a ``ConfigError`` and any value inside it is accepted. The strategies
are derived from the ``Param`` declarations themselves, so a key added later is tested too. The
command line refuses such values with one line on stderr, exit status 2, before Ray starts."""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, ray_never_started
from tuner.cli import main, pins_from_pairs
from tuner.config import COMPONENTS, TRIAL_PARAMS, make_trial_config, trial_params
from tuner.errors import ConfigError
from tuner.models import backbone_names, get_backbone
from tuner.options import ANALYZE_OPTIONS, CONFIRM_OPTIONS, TRACKING_SCHEMES, check_tracking_uri, flag
from tuner.pretrain.config import PRETRAIN_PARAMS, PRETRAIN_SEARCH_OPTIONS, make_pretrain_config
from tuner.search_request import TUNE_OPTIONS
from tuner.spec import Param
from tuner.weight_sources import weight_forms

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLI = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL_PARAMS: list[tuple[str, Param]] = [
    *((f"trial:{p.name}", p) for p in trial_params().values()),
    *((f"pretrain:{p.name}", p) for p in PRETRAIN_PARAMS),
    *((f"pretrain --search:{p.name}", p) for p in PRETRAIN_SEARCH_OPTIONS),
    *((f"tune:{p.name}", p) for p in TUNE_OPTIONS),
    *((f"confirm:{p.name}", p) for p in CONFIRM_OPTIONS),
    *((f"analyze:{p.name}", p) for p in ANALYZE_OPTIONS),
]
# Trial-level keys that choose a component or a form: a str Param whose registry is the check.
CHOOSERS = {"backbone", "weights", "layer_groups", *(r.kind for r in COMPONENTS)}


def _types(param: Param) -> tuple[type, ...]:
    return param.type if isinstance(param.type, tuple) else (param.type,)


def _numbers(param: Param, low: float | None, high: float | None, low_open: bool, high_open: bool):
    """The numbers of ``param``'s type(s) within [low, high] (open ends excluded), finite."""
    parts = []
    if int in _types(param) and bool not in _types(param):
        lo = None if low is None else (math.floor(low) + 1 if low_open or low != math.floor(low) else int(low))
        hi = None if high is None else (math.ceil(high) - 1 if high_open or high != math.ceil(high) else int(high))
        if lo is None or hi is None or lo <= hi:
            parts.append(st.integers(min_value=lo, max_value=hi))
    if float in _types(param):
        parts.append(st.floats(min_value=low, max_value=high, exclude_min=low_open and low is not None,
                               exclude_max=high_open and high is not None, allow_nan=False, allow_infinity=False))
    return st.one_of(*parts) if parts else st.nothing()


def valid_values(param: Param) -> st.SearchStrategy[Any]:
    """Every value the declaration allows (choices, booleans, any string, numbers in the range)."""
    if param.choices is not None:
        base = st.sampled_from(param.choices)
    elif bool in _types(param):
        base = st.booleans()
    elif str in _types(param):
        base = st.text(min_size=1, max_size=12)
    else:
        base = _numbers(param, param.low, param.high, param.low_open, param.high_open)
    return st.one_of(st.none(), base) if param.nullable or param.default is None else base


def invalid_values(param: Param) -> st.SearchStrategy[Any]:
    """Values the declaration refuses: another type, outside the range, not finite, not a choice, or
    None where every run needs one."""
    types = _types(param)
    parts: list[st.SearchStrategy[Any]] = []
    if str not in types:
        parts.append(st.text(max_size=8))
    if not {int, float} & set(types) or bool in types:
        parts.append(st.integers() | st.floats(allow_nan=False))
    if bool not in types and {int, float} & set(types):
        parts.append(st.booleans())
    if int in types and float not in types and bool not in types:
        parts.append(st.floats(allow_nan=False))  # a float is not an int, even 3.0
    if float in types:
        parts.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    if param.low is not None:
        parts.append(_numbers(param, None, param.low, False, not param.low_open))
    if param.high is not None:
        parts.append(_numbers(param, param.high, None, not param.high_open, False))
    if param.choices is not None:
        parts.append(st.text(max_size=12).filter(lambda v: v not in param.choices))
    if not (param.nullable or param.default is None):
        parts.append(st.none())
    return st.one_of(*parts)


@pytest.mark.parametrize(("where", "param"), ALL_PARAMS, ids=[w for w, _ in ALL_PARAMS])
@FAST
@given(data=st.data())
def test_every_declared_key_accepts_its_range_and_refuses_the_rest(where, param, data):
    param.check(data.draw(valid_values(param), label="valid"))
    bad = data.draw(invalid_values(param), label="invalid")
    with pytest.raises(ConfigError) as refused:
        param.check(bad)
    message = str(refused.value)
    assert param.name in message and "\n" not in message


def _required(component: Any, but: str = "") -> dict[str, Any]:
    """The component's parameters that have no default and must be given (lp_ft's lp_epochs), at their
    lowest allowed value."""
    return {p.name: int(p.low) for p in component.params if p.name != but and p.default is None and not p.nullable}


def _context(key: str, value: Any) -> dict[str, Any]:
    """The other keys a trial needs for ``key=value`` to be meaningful: the component that reads a
    component's parameter, and the keys a cross-key rule compares it with."""
    for registry in COMPONENTS:
        if key in registry.params():
            component = registry.get(registry.users(key)[0])
            context: dict[str, Any] = {registry.kind: component.name, **_required(component, but=key)}
            if key == "lp_epochs" and value is not None:
                context["epochs"] = value + 1
            return context
    if key == "fold":
        return {"folds": max(2, value + 1)}
    if key == "resize_size":
        return {"image_size": 16}
    return {}


@pytest.mark.parametrize("key", [k for k in trial_params() if k not in CHOOSERS])
@FAST
@given(data=st.data())
def test_every_trial_key_through_make_trial_config(key, data):
    """What a search checks on the driver: a generated value inside the declaration makes a trial
    config (with the component that reads it); one outside it is refused naming the key."""
    param = trial_params()[key]
    component_param = any(key in registry.params() for registry in COMPONENTS)
    required = component_param and param.default is None and not param.nullable  # lp_ft's lp_epochs
    good = data.draw(valid_values(param).filter(lambda v: v is not None or not required), label="valid")
    # The rules that compare a key with another (resnet18: 16 px at least, 5 layer groups).
    crossed = (key == "image_size" and good < 16 or key == "resize_size" and good is not None and good < 16
               or key == "unfreeze" and good is not None and good > 5)
    if crossed:
        with pytest.raises(ConfigError, match=f"{key}={good}"):
            make_trial_config({**_context(key, good), key: good})
    else:
        config = make_trial_config({**_context(key, good), key: good})
        if good is not None:  # None: unset, or filled from the default (lp_ft_lr's lr / 10)
            assert config[key] == good
    # A component's parameter left None is filled with its default when the component is chosen.
    bad = data.draw(invalid_values(param).filter(lambda v: v is not None or not component_param), label="invalid")
    with pytest.raises(ConfigError, match=key):
        make_trial_config({**_context(key, 1), key: bad})


@FAST
@given(backbone=st.sampled_from(backbone_names()), size=st.integers(1, 600))
def test_image_size_is_checked_against_the_backbones_minimum(backbone, size):
    spec = get_backbone(backbone)
    if size >= spec.min_image_size:
        assert make_trial_config({"backbone": backbone, "weights": "none", "image_size": size})["image_size"] == size
    else:
        with pytest.raises(ConfigError, match=f"image_size={size} is too small for {backbone}.*>= "
                                              f"{spec.min_image_size}"):
            make_trial_config({"backbone": backbone, "weights": "none", "image_size": size})


@FAST
@given(folds=st.integers(2, 40), fold=st.integers(0, 50))
def test_fold_must_be_below_folds(folds, fold):
    if fold < folds:
        assert make_trial_config({"folds": folds, "fold": fold})["fold"] == fold
    else:
        with pytest.raises(ConfigError, match=f"fold={fold} is out of range for folds={folds}"):
            make_trial_config({"folds": folds, "fold": fold})


def _near_miss(names: list[str]):
    """A registered name with one letter dropped: what a typo looks like."""
    return st.sampled_from([n for n in names if len(n) > 3]).flatmap(
        lambda name: st.integers(1, len(name) - 1).map(lambda i: name[:i] + name[i + 1:])).filter(
        lambda typo: typo not in names)


@pytest.mark.parametrize("registry", COMPONENTS, ids=[r.kind for r in COMPONENTS])
@FAST
@given(data=st.data())
def test_enumerations_accept_their_names_and_refuse_typos_with_did_you_mean(registry, data):
    name = data.draw(st.sampled_from(registry.names()))
    assert make_trial_config({registry.kind: name, **_required(registry.get(name))})[registry.kind] == name
    typo = data.draw(_near_miss(registry.names()))
    with pytest.raises(ConfigError, match=f"unknown {registry.kind} {typo!r}.*Did you mean"):
        make_trial_config({registry.kind: typo})


@FAST
@given(data=st.data())
def test_backbones_and_weight_forms(data):
    typo = data.draw(_near_miss([n for n in backbone_names() if "/" not in n]))
    with pytest.raises(ConfigError, match="unknown backbone.*Did you mean"):
        make_trial_config({"backbone": typo})
    word = data.draw(st.from_regex(r"\A[a-z]{3,10}\Z").filter(lambda w: w not in ("none", "imagenet", "radimagenet")))
    with pytest.raises(ConfigError, match=f"weights={word!r} is in no known form"):
        make_trial_config({"weights": word})
    assert len(weight_forms()) >= 5


@FAST
@given(data=st.data())
def test_pretraining_config_from_generated_values(data):
    param = data.draw(st.sampled_from([p for p in PRETRAIN_PARAMS if p.name not in ("backbone", "image_size")]))
    good = data.draw(valid_values(param))
    assert make_pretrain_config({"backbone": "resnet18", "image_size": 32, param.name: good})[param.name] == good
    bad = data.draw(invalid_values(param))
    with pytest.raises(ConfigError, match=param.name):
        make_pretrain_config({"backbone": "resnet18", "image_size": 32, param.name: bad})


@FAST
@given(scheme=st.from_regex(r"\A[a-z][a-z0-9]{1,9}\Z"))
def test_tracking_uri_schemes(scheme):
    uri = f"{scheme}://user:s3cret@host/x"
    if scheme in TRACKING_SCHEMES:
        check_tracking_uri(uri)
    else:
        with pytest.raises(ConfigError, match=f"scheme '{scheme}:' is unknown.*Supported: file, sqlite") as refused:
            check_tracking_uri(uri)
        assert "s3cret" not in str(refused.value)
    check_tracking_uri("postgresql+psycopg2://u:p@db/mlflow")
    check_tracking_uri("/a/folder/mlruns")


# --- the command line: one line on stderr, exit 2, no Ray -------------------------------------------------

def _cli(argv: list[str]) -> tuple[int, str]:
    """``medtune argv`` in this process: its exit status and stderr (argparse's refusals exit)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def _typed(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parsed(param: Param, text: str, how: str) -> Any:
    """What the command line makes of ``text``: a ``--set`` value is a Python literal where it parses,
    an option has its declared type (argparse refuses what does not convert: None here)."""
    if how == "--set":
        return pins_from_pairs([f"{param.name}={text}"])[param.name]
    kind = float if float in _types(param) else _types(param)[0]
    try:
        return kind(text)
    except ValueError:
        return None


def _refused(param: Param, value: Any) -> bool:
    try:
        param.check(value)
    except ConfigError:
        return True
    return value is None


def _command_line_invalid(param: Param, how: str = "option") -> st.SearchStrategy[str]:
    """Invalid values as a user would type them (out-of-range numbers, words for numbers, unknown
    choices), kept only if what the command line parses them to is still invalid ("1" for a count
    is a valid 1)."""
    typed = invalid_values(param).filter(lambda v: v is not None and not isinstance(v, bool)).map(_typed)
    return typed.filter(lambda t: t.strip() == t and t and t.isprintable() and not t.startswith("-")
                        or t.lstrip("-").replace(".", "").replace("e", "").isdigit()).filter(
        lambda t: _refused(param, _parsed(param, t, how)))


def _assert_refused(argv: list[str], *keys: str) -> None:
    """Exit status 2, one line on stderr naming the key (as the user typed it, or its config name),
    and no Ray."""
    with ray_never_started():
        code, err = _cli(argv)
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1 and any(key in lines[0] for key in keys) and "Traceback" not in err, (argv, err)


# No data there: a value wrongly let through fails at loading, seconds later, instead of starting a search.
TUNE_BASE = ["tune", "--space", "quick", "--dataset", "breastmnist", "--storage", "/nonexistent/never-created",
             "--data-root", "/nonexistent/no-data"]


@pytest.mark.parametrize("param", [p for p in TUNE_OPTIONS if p.name != "max_failures"], ids=lambda p: p.name)
@CLI
@given(data=st.data())
def test_tune_options_out_of_range_exit_2_with_one_line(param, data):
    value = data.draw(_command_line_invalid(param))
    _assert_refused([*TUNE_BASE, flag(param.name), value], flag(param.name))


@pytest.mark.parametrize("param", [p for p in TRIAL_PARAMS if p.name not in CHOOSERS], ids=lambda p: p.name)
@CLI
@given(data=st.data())
def test_set_keys_out_of_range_exit_2_with_one_line(param, data):
    value = data.draw(_command_line_invalid(param, "--set"))
    _assert_refused([*TUNE_BASE, "--set", f"{param.name}={value}"], param.name)


@pytest.mark.parametrize("param", CONFIRM_OPTIONS, ids=lambda p: p.name)
@CLI
@given(data=st.data())
def test_confirm_options_exit_2_with_one_line(param, data, tmp_path_factory):
    given_ = {"top_k": "1", "seeds": "2", param.name: data.draw(_command_line_invalid(param))}
    argv = ["confirm", "--experiment", "x", "--storage", str(tmp_path_factory.getbasetemp() / "none")]
    for name, value in given_.items():
        argv += [flag(name), value]
    _assert_refused(argv, flag(param.name))


@pytest.mark.parametrize("param", [p for p in (*PRETRAIN_PARAMS, *PRETRAIN_SEARCH_OPTIONS)
                                   if p.type not in (str, bool)], ids=lambda p: p.name)
@CLI
@given(data=st.data())
def test_pretrain_options_exit_2_with_one_line(param, data, tmp_path_factory):
    value = data.draw(_command_line_invalid(param))
    storage = tmp_path_factory.getbasetemp() / "pretrain-never"
    _assert_refused(["pretrain", "--dataset", "breastmnist", "--backbone", "resnet18", "--image-size", "32",
                     "--search", "--storage", str(storage), flag(param.name), value],
                    param.name, flag(param.name))
    assert not storage.exists()


@pytest.mark.parametrize("param", ANALYZE_OPTIONS, ids=lambda p: p.name)
@CLI
@given(data=st.data())
def test_analyze_options_exit_2_with_one_line(param, data, tmp_path_factory):
    value = data.draw(_command_line_invalid(param))
    _assert_refused(["analyze", "--experiment", "x", "--storage", str(tmp_path_factory.getbasetemp() / "a"),
                     flag(param.name), value], flag(param.name))


@pytest.mark.parametrize("argv", [
    ["--num-samples", "0"], ["--set", "dropout=1.5"], ["--tracking-uri", "htp://127.0.0.1:5000"],
], ids=lambda a: " ".join(a))
def test_the_process_exits_2_without_a_traceback_or_a_ray_session(argv, tmp_path):
    """Patch-free: the real entry point in a subprocess; Ray would write a session folder under its
    temp dir the moment it started."""
    ray_tmp = tmp_path / "ray"
    done = subprocess.run([sys.executable, "-m", "tuner", *TUNE_BASE[:5], "--storage", str(tmp_path / "s"),
                           "--data-root", str(tmp_path / "no-data"), *argv],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(ray_tmp)})
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not ray_tmp.exists() and not (tmp_path / "s").exists()
