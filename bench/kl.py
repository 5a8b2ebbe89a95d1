"""The cost of a KL term to the base model: PG steps per second with ``--kl-coef`` against the
same steps without it (docs/design.md, "KL to the base model"), at the three shapes of the PG
benchmark (B), on one pinned core as ``python -m bench`` runs.

    python -m bench.kl [--quick]

A ratio of rates measured in one process, medians of repeats; the goal of issue 26 is a step with
the KL term at most 1.5x the cost of one without it.
"""

from __future__ import annotations

import sys

from .__main__ import PG_SHAPES, Setup, cpu, median_rate  # sets the thread variables and pins to one core first

CASES = {"none": {}, "exact": dict(kl_coef=0.1, kl_estimator="exact"),
         "k3 in the loss": dict(kl_coef=0.1, kl_estimator="k3", kl_in="loss"),
         "k1 in the reward": dict(kl_coef=0.1, kl_estimator="k1", kl_in="reward")}


def main(quick: bool = False) -> None:
    print("; ".join(f"{key}: {value}" for key, value in cpu().items()))
    n = 20000 if quick else 200000
    repeats = 3 if quick else 5
    print("| shape | reward | " + " | ".join(f"{c} (steps/s)" for c in CASES) + " | cost of the KL term (x) |")
    print("|---|---|" + "---|" * (len(CASES) + 1))
    for shape, over in PG_SHAPES.items():
        s = Setup(**over)
        for reward in ("orm", "prm"):
            rates = {}
            for case, kl in CASES.items():
                batch = s.batch(reward=reward, **kl)
                rates[case] = median_rate(lambda batch=batch: batch.advance(n), n, repeats)
            worst = max(rates["none"] / r for c, r in rates.items() if c != "none")
            cells = " | ".join(f"{rates[c]:,.0f}" for c in CASES)
            print(f"| {shape} ({s.d}, {s.k}, {s.N}) | {reward} | {cells} | {worst:.2f} |", flush=True)


if __name__ == "__main__":
    main("--quick" in sys.argv)
