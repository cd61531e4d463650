"""Formula checks and design matrices for the mixed models: what a formula reads, whether each column
exists (with a did-you-mean), which rows are complete, and which terms cannot be estimated (a column
that never varies, aliased columns), so the fit gets a smaller model and a note instead of a crash.
"""

from __future__ import annotations

import ast
import builtins
import difflib
from typing import Any

import numpy as np
import pandas as pd
import patsy
import patsy.builtins

# Names a formula may use that are not columns: patsy's helpers (C, Q, I, Treatment, ...),
# numpy as np, and Python builtins (abs, ...).
EVAL_NAMESPACE: dict[str, Any] = {"np": np, "numpy": np}
_KNOWN_NAMES = set(patsy.builtins.__all__) | set(EVAL_NAMESPACE) | set(dir(builtins))


def parse_formula(formula: str, what: str) -> patsy.ModelDesc:
    """A formula string parsed by patsy; a ValueError that quotes it when it cannot be parsed."""
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(
            f"{what} must be a non-empty formula string, e.g. 'auc ~ lr + C(head)'; got {formula!r}"
        )
    try:
        return patsy.ModelDesc.from_formula(formula.strip())
    except patsy.PatsyError as exc:
        raise ValueError(f"could not parse {what} {formula!r}: {exc}") from None


def term_columns(terms: list[patsy.Term], frame: pd.DataFrame, what: str) -> set[str]:
    """Columns the terms read; a name that is neither a column nor a known helper is an error."""
    columns: set[str] = set()
    for term in terms:
        for factor in term.factors:
            columns |= factor_columns(factor.code, frame, what)
    return columns


def factor_columns(code: str, frame: pd.DataFrame, what: str) -> set[str]:
    """Columns one patsy factor (e.g. ``"np.log10(lr)"``, ``"C(head)"``, ``'Q("lr x")'``) reads."""
    tree = ast.parse(code.strip(), mode="eval")
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    columns: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Q":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                columns.add(require_column(node.args[0].value, frame, what))
        elif isinstance(node, ast.Name):
            if node.id in frame.columns and id(node) not in called:
                columns.add(node.id)
            elif node.id in _KNOWN_NAMES:
                continue
            elif id(node) in called:
                raise ValueError(
                    f"{what} calls {node.id}(), which is not a known function: use numpy through np "
                    f"(e.g. np.log10) or patsy's helpers (C, I, Q, center, standardize)"
                )
            else:
                require_column(node.id, frame, what)
    return columns


def require_column(name: str, frame: pd.DataFrame, what: str) -> str:
    """``name`` when it is a column; else a ValueError naming the closest column and listing them all."""
    if name in frame.columns:
        return name
    available = [str(c) for c in frame.columns]
    close = difflib.get_close_matches(str(name), available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(repr(c) for c in available)
    raise ValueError(
        f"{what} names column {name!r}, which is not in the frame{hint} Available columns: {listing}"
    )


def complete_rows(frame: pd.DataFrame, used: list[str], notes: list[str]) -> pd.DataFrame:
    """The rows with a value in every model column (how many were left out goes to ``notes``)."""
    data = frame.loc[:, used].copy()
    for col in used:  # patsy treats object columns as categorical, not pandas' string dtype
        if isinstance(data[col].dtype, pd.StringDtype):
            data[col] = data[col].astype(object)
    complete = data.notna().all(axis=1)
    if not complete.any():
        raise ValueError(
            f"no row has values in all of the model's columns ({', '.join(used)}): "
            "fill or drop the missing values"
        )
    if not complete.all():
        n_missing = int((~complete).sum())
        notes.append(f"Left out {n_missing} of {len(data)} rows with missing values in the model's columns.")
        data = data.loc[complete]
    return data.reset_index(drop=True)


def drop_constant_terms(
    terms: list[patsy.Term], data: pd.DataFrame, notes: list[str], *, what: str
) -> list[patsy.Term]:
    """Drop every term that reads a column with a single value: it is aliased with the intercept."""
    constant: dict[str, Any] = {}
    term_cols: list[set[str]] = []
    for term in terms:
        cols = set().union(*(factor_columns(f.code, data, "formula") for f in term.factors), set())
        term_cols.append(cols)
        for col in cols:
            if col not in constant and data[col].nunique(dropna=False) <= 1:
                constant[col] = data[col].iloc[0]
    if not constant:
        return list(terms)
    kept = [t for t, cols in zip(terms, term_cols, strict=True) if not cols & constant.keys()]
    for col, value in constant.items():
        dropped = [t.name() for t, cols in zip(terms, term_cols, strict=True) if col in cols]
        extra = f" (terms dropped: {', '.join(dropped)})" if len(dropped) > 1 else ""
        notes.append(
            f"{col} never varies (always {show(value)}): its {what} cannot be estimated "
            f"and was dropped{extra}"
        )
    return kept


def drop_aliased(x: pd.DataFrame, notes: list[str]) -> list[str]:
    """Names of the design columns to keep: each column that is a linear combination of earlier
    ones is dropped (left to right), with a note.

    Keeping the earlier column of an aliased pair keeps the formula's order meaningful: the term
    written first is estimated, the one that adds nothing is reported and dropped.
    """
    values = x.to_numpy(dtype=float)
    basis = np.zeros((len(x), 0))
    dropped: set[int] = set()
    for j in range(values.shape[1]):
        col = values[:, j]
        size = np.linalg.norm(col)
        resid = col - basis @ (basis.T @ col)
        resid -= basis @ (basis.T @ resid)  # second pass: classical Gram-Schmidt loses orthogonality
        if size == 0 or np.linalg.norm(resid) <= 1e-9 * size:
            dropped.add(j)
        else:
            basis = np.column_stack([basis, resid / np.linalg.norm(resid)])
    for term, cols in x.design_info.term_slices.items():
        gone = [str(x.columns[j]) for j in range(cols.start, cols.stop) if j in dropped]
        if not gone:
            continue
        if len(gone) == cols.stop - cols.start:
            notes.append(
                f"{term.name()} is completely determined by the other terms (aliased): its effect "
                "cannot be separated from theirs and it was dropped."
            )
        else:
            notes.append(
                f"{term.name()}: {', '.join(gone)} cannot be separated from the other terms (aliased, "
                "e.g. an empty cell in an interaction) and was dropped."
            )
    return [str(c) for j, c in enumerate(x.columns) if j not in dropped]


def reference_levels(info: patsy.DesignInfo, kept: list[str]) -> dict[str, str]:
    """Reference level of each treatment-coded categorical main effect still in the design.

    Under treatment coding the reference level is the one whose row of the contrast matrix is all
    zeros; full-rank coding (no intercept) or sum coding has no such row and no reference.
    """
    levels: dict[str, str] = {}
    for term, cols in info.term_slices.items():
        if len(term.factors) != 1 or not set(kept) & set(info.column_names[cols]):
            continue
        factor = term.factors[0]
        factor_info = info.factor_infos[factor]
        if factor_info.type != "categorical":
            continue
        for subterm in info.term_codings[term]:
            matrix = np.asarray(subterm.contrast_matrices[factor].matrix)
            zero_rows = np.flatnonzero(~matrix.any(axis=1))
            if len(zero_rows) == 1:
                levels[factor.name()] = str(factor_info.categories[zero_rows[0]])
    return levels




def show(value: Any) -> str:
    """A value as a note quotes it (numpy scalars as plain Python values)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)

