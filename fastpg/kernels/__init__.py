"""The compiled kernels (docs/design.md, "Architecture"): pure Numba functions, no I/O, no Python
objects, randomness only from the run's own generator state. Nothing here imports the rest of
fastpg except :mod:`fastpg.codes` (checked by ``tests/test_architecture.py``).

- ``rng``, ``variates``, ``vecmath``, ``simd``: random streams and variates, vectorisable ``exp``
  and ``log``, an eight-lane float64 type;
- ``tables``, ``lanes``, ``sampling``, ``updates``: the linear autoregressive model (lazy
  log-softmax tables, a tile's logits in SIMD lanes, sampling and greedy decoding, updates);
- ``contexts``, ``steps``, ``events``, ``advance``: contexts and labels, one step of each
  algorithm, event-driven pg, a run's step loop;
- ``engine``: batches of runs of one shape, advanced and evaluated in parallel.
"""
