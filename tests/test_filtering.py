"""Filtering uninformative groups (DAPO's dynamic sampling; fastpg.kernels.filtering): every group
sampled one by one against the NumPy reference, step for step; exact skip-ahead of the discarded
groups against sampling them, by two-sample tests; the options' errors."""

import numpy as np
import pytest
from scipy import stats

import fastpg
import naive
from conftest import new_state
from fastpg import codes as S
from fastpg.config import ConfigError, RunConfig
from fastpg.kernels.engine import Batch
from fastpg.runs import base_model, post_training_run
from fastpg.tasks import make_task
from test_steps import _setup, advance_run, kernel_params

P_MIN = 1e-3
CASES = [
    dict(reward="orm", G=4, baseline="rloo", lr="constant"),
    dict(reward="orm", G=3, baseline="mean", lr="adaptive"),
    dict(reward="prm", G=4, baseline="grpo", lr="constant"),
    dict(reward="prm", G=2, baseline="rloo", lr="invsqrt"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("features,clusters,pool", [(0, 0, 0), (1, 3, 0), (0, 2, 4)])
def test_filtered_steps_sampling_every_group_match_the_reference(rng, case, features, clusters, pool):
    """With --no-skip every group is sampled as an ordinary step samples it: the same weights (to
    rounding), counters (groups_discarded too) and random numbers as the reference, budget included."""
    N, k, d, n = 3, 2, 4, 40
    W0, W_star, centres, cdf, px, py = _setup(rng, features, N, k, d, clusters, pool)
    cfg = dict(features=features, algorithm="pg", skip=False, eta=0.7, floor=1e-8, M=6, sigma=0.3, gamma=0.0,
               filter_groups=True, **case)
    p = kernel_params(cfg, features)
    p["filter_groups"] = 1
    W, state, counters = W0.copy(), new_state(4), np.zeros(len(S.COUNTERS))
    assert advance_run(W, W_star, centres, cdf, px, py, state, counters, p, n) == S.OK
    ref_counters, ref_state = dict.fromkeys(S.COUNTERS, 0.0), new_state(4)
    W_ref = naive.advance_run(W0.copy(), W_star, centres, cdf, px, py, ref_state, ref_counters, cfg, n)
    np.testing.assert_allclose(W, W_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(counters, [ref_counters[c] for c in S.COUNTERS])
    np.testing.assert_array_equal(state, ref_state)
    assert counters[S.C_DISCARDED] > 0 and counters[S.C_UPDATES] > 0


def _batch(reward, G, baseline, skip, seeds, M, features="position", n_train=0, lr="constant", eta=0.3):
    runs = []
    for seed in seeds:
        cfg = RunConfig.from_dict(dict(d=4, k=3, N=3, features=features, reward=reward, base="uniform", G=G,
                                       baseline=baseline, lr=lr, eta=eta, filter_groups=True, M=M, skip=skip,
                                       n_train=n_train, n_test=16, steps=10, seed=seed))
        task = make_task(cfg)
        runs.append(post_training_run(cfg, task, base_model(cfg, task)))
    return Batch(runs)


@pytest.mark.slow
@pytest.mark.parametrize("reward,G,baseline,M,features,n_train", [
    ("orm", 4, "rloo", 10**6, "position", 0), ("orm", 2, "mean", 3, "position", 0), ("prm", 4, "grpo", 10**6, "position", 0),
    ("prm", 3, "rloo", 4, "markov", 0), ("orm", 4, "mean", 10**6, "markov", 0), ("orm", 4, "rloo", 10**6, "position", 4)])
def test_skipping_the_discarded_groups_is_exact_in_distribution(reward, G, baseline, M, features, n_train):
    """Skip-ahead (geometric discards, their classes by one multinomial, the kept group conditioned on
    being mixed) against sampling every group: two-sample tests on every counter and on the final test
    likelihoods, 300 runs each (on a pool too: there --skip is this skip-ahead, not the event path)."""
    n_steps = 60
    a = _batch(reward, G, baseline, True, range(300), M, features, n_train)
    b = _batch(reward, G, baseline, False, range(1000, 1300), M, features, n_train)
    a.advance(n_steps)
    b.advance(n_steps)
    assert np.array_equal(a.counters[:, S.C_TOKENS], 3 * a.counters[:, S.C_SEQUENCES])  # every response sampled whole
    assert np.array_equal(b.counters[:, S.C_TOKENS], 3 * b.counters[:, S.C_SEQUENCES])
    for name in ("sequences", "orm_queries", "prm_queries", "updates", "mistakes", "groups_discarded"):
        i = S.COUNTERS.index(name)
        x, y = a.counters[:, i], b.counters[:, i]
        if np.ptp(np.r_[x, y]) > 0:
            assert stats.ks_2samp(x, y).pvalue > P_MIN, name
    la, lb = a.evaluate()[0].mean(axis=1), b.evaluate()[0].mean(axis=1)
    assert stats.ks_2samp(la, lb).pvalue > P_MIN
    assert a.counters[:, S.C_DISCARDED].sum() > 0 and np.all(a.counters[:, S.C_STEPS] == n_steps)


def test_filtered_and_plain_runs_do_not_share_a_batch():
    """Their trace columns differ (groups_discarded), and a batch file's columns are its runs' own."""
    from fastpg.api import _batch_key

    cfg = RunConfig.from_dict({"G": 4, "baseline": "rloo"})
    assert _batch_key(cfg) != _batch_key(cfg.replace(filter_groups=True))


def test_the_counter_is_recorded_only_with_filtering(tmp_path):
    base = dict(d=5, k=3, N=3, G=4, baseline="rloo", lr="constant", eta=0.3, steps=300, eval_every=100, n_test=16,
                n_pre=100, M=50)
    plain = fastpg.run(base)
    filtered = fastpg.run({**base, "filter_groups": True})
    assert "groups_discarded" not in plain.trace
    tr = filtered.trace
    assert tr["groups_discarded"][-1] > 0 and np.all(np.diff(tr["groups_discarded"]) >= 0)
    # a filtered step samples G responses per group: the discarded ones and the one it keeps (or M)
    assert tr["sequences"][-1] >= 4 * (tr["groups_discarded"][-1] + tr["updates"][-1])


@pytest.mark.parametrize("change,option", [
    (dict(baseline="none"), "filter_groups"), (dict(algorithm="rs", baseline="none", G=1), "filter_groups"),
    (dict(kl_coef=0.1, lr="constant"), "filter_groups"), (dict(skip=False), "M")])
def test_filtering_needs_a_group_baseline_and_no_kl(change, option):
    with pytest.raises(ConfigError, match=option):
        RunConfig.from_dict({"G": 4, "baseline": "rloo", "filter_groups": True, **change})
