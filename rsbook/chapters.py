"""What each chapter notebook's parameters accept: one table, read by the notebook and by ``rsbook run``.

The rules shared by every chapter (``sigmas``, ``alpha``, ``dataset``, ...) live in
:data:`rsbook.params.RULES`; this module adds each chapter's own parameters and overrides a
shared rule where a chapter gives a name another meaning (the ISS chapter's ``radii = None``
means "0, σ/2, …, 3σ"). A chapter's validation cell calls
``check_parameters(globals(), extra=chapter_rules("05_iss"))`` and
:func:`rsbook.runner.run_notebook` checks the same rules before any cell runs, so a value
the notebook would accept is never refused up front and vice versa. Every parameter of
every chapter has a rule here or in :data:`~rsbook.params.RULES` (``tests/test_params.py``
holds the chapters to that and to the promises their comments make).

This module is a catalogue, not core: it may import the paper modules for their names.
"""

from __future__ import annotations

import os
from pathlib import Path

from rsbook.params import (Rule, alpha_value, boolean, choice, list_of, mapping, nonneg_float, nonneg_int,
                           one_or_list, open_fraction, optional, positive_float, positive_int, string)

__all__ = ["CHAPTER_RULES", "chapter_rules"]


def _paper_tables():
    from rsbook.analysis import available_paper_tables

    return available_paper_tables()


def _objectives():
    from rsbook.train import OBJECTIVES

    return OBJECTIVES


def _ce_modes():
    from rsbook.adre import CE_MODES

    return CE_MODES


_paper_table = choice(_paper_tables)
_method = choice(_objectives)

#: the SmoothAdv chapter's training methods ("pgd"/"ddn": SmoothAdv with that attack)
SMOOTHADV_METHODS = ("gaussian", "pgd", "ddn", "vanilla")

CHAPTER_RULES: dict[str, dict[str, Rule]] = {
    "00_randomized_smoothing": {
        "paper_table_name": _paper_table,
    },
    "02_adre": {
        "lambdas": list_of(nonneg_float, allow_empty=False), "ce": choice(_ce_modes),
        "floor": optional(open_fraction), "soft_draws": positive_int,
        "adv_sigmas": list_of(positive_float), "adv_lambda": nonneg_float, "adv_epsilon": positive_float,
        "adv_steps": positive_int, "adv_num_noise": positive_int, "adv_warmup": nonneg_int,
        "t_grid": positive_int, "sim_alpha": alpha_value, "sim_trials": positive_int, "sim_n": positive_int,
        "train_models": boolean, "released_models": mapping,
    },
    "01_smoothadv": {
        "threads": positive_int, "progress": boolean,
        "methods": list_of(choice(SMOOTHADV_METHODS), allow_empty=False), "vanilla": boolean,
        "epsilon": positive_float, "m_train": positive_int, "pgd_steps": positive_int, "ddn_steps": positive_int,
        "eps_warmup_epochs": nonneg_int, "ablation_sigma": positive_float, "ablation_method": choice(("pgd", "ddn")),
        "ablation_m_train": list_of(positive_int), "ablation_epsilons": list_of(positive_float),
        "m_draws_control": boolean,
        "grid_product": mapping, "grid_shard": string, "attack_epsilon": positive_float,
        "attack_steps": positive_int, "m_test": positive_int, "m_test_sweep": list_of(positive_int, allow_empty=False),
        "num_attack": positive_int, "attack_batch": positive_int, "attack_chunk": optional(positive_int),
        "predict_n": positive_int, "soft_draws": positive_int, "empirical_radii": list_of(positive_float),
        "headline_m_test": positive_int, "headline_steps": positive_int, "headline_predict_n": positive_int,
        "num_empirical": positive_int, "linf_radii": list_of(positive_float), "check_claims": boolean,
    },
    "03_catrs": {
        "methods": list_of(_method, allow_empty=False), "other_sigmas": list_of(positive_float),
        "other_methods": list_of(_method), "corruption_methods": list_of(_method),
        **{f"{m}_args": mapping for m in ("gaussian", "stability", "smoothadv", "macer", "consistency", "catrs")},
        "per_sigma_args": mapping, "teacher_sigma": positive_float, "teacher_samples": positive_int,
        "lambdas": list_of(nonneg_float), "trace_training": boolean, "corruption_sigma": positive_float,
        "corruption_skip": positive_int, "corruption_n0": positive_int, "corruption_n": positive_int,
        "cifar10c_root": optional(string), "reference_logs": optional(string), "reference_table1": mapping,
        "reference_cifar10c": mapping, "large_radius_methods": list_of(_method), "large_radius_n": positive_int,
        "large_radius_skip": positive_int,
    },
    "04_non_gaussian": {
        "threads": positive_int, "families": list_of(choice(("l2", "linf")), allow_empty=False),
        "k": nonneg_float, "k_linf": nonneg_float, "train_new_noise": boolean, "extension_sigma": positive_float,
        "noise_alpha": alpha_value, "noise_samples": positive_int, "linf_radii": list_of(positive_float),
        "linf_grid_step": positive_float, "linf_grid_max": positive_float, "paper_table_name": _paper_table,
    },
    "05_iss": {
        "threads": positive_int, "k_bar": one_or_list(positive_int), "k0": optional(positive_int),
        "k0_fraction": open_fraction, "U_AD": one_or_list(positive_float, allow_empty=False),
        "U_RD": one_or_list(open_fraction), "ias_fractions": one_or_list(positive_float),
        "n_examples": positive_int, "radii": optional(list_of(nonneg_float)), "delta": open_fraction,
        "paper_table_name": _paper_table, "paper_sigma": optional(positive_float), "sound_trials": positive_int,
        "sound_alpha": alpha_value, "fine_samples": optional(positive_int),
    },
}


def chapter_rules(notebook: str | os.PathLike) -> dict[str, Rule]:
    """The rules of one chapter, by its notebook's path or stem (``"05_iss"``); ``{}`` for an unknown notebook."""
    return dict(CHAPTER_RULES.get(Path(notebook).stem, {}))
