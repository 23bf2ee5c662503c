"""Bootstrap intervals from resample counts against recomputing each resample from its rows drawn out, in one run.

`mlsys.evaluate.task_bootstrap` gives each metric of every task its percentile interval over 500 resamples. It
computes a block of resamples at once from counts (`counted_metrics`, `counted_multiclass`, `counted_regression`).
The reference here is the way it was done before: each resample's rows drawn out and `point_metrics` computed on
them, one resample at a time. Both draw the same resamples from the same seed, so the intervals must agree (the
largest relative difference of an interval's ends is printed). Tables are synthetic: binary scores with a
quarter positives (and the same rounded to two decimals: tied scores), five classes, and regression targets around
100 (and the same with one far outlier, 1e9); medians of `--repeats`.

    python benchmarks/evaluate.py [--rows 300,20000] [--repeats 3]
"""
import argparse, statistics, time
from functools import partial
import numpy as np
from mlsys.evaluate import point_metrics, task_bootstrap
from mlsys.tasks import Task

N_BOOT = 500


def one_by_one(task, y, out, threshold, keys, n=N_BOOT, alpha=0.05, seed=0):
    "The interval of each of `keys`, each resample's metrics computed from its rows drawn out (the reference)."
    fn = partial(point_metrics, task, threshold=threshold)
    rng, point, draws = np.random.default_rng(seed), fn(y, out), []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if task.kind != 'binary' or 0 < y[i].sum() < len(y): draws.append(fn(y[i], out[i]))   # binary: both classes
    res = {}
    for k in keys:
        d = np.array([x[k] for x in draws], dtype=float)
        d = d[np.isfinite(d)]
        res[k] = dict(value=float(point[k]), low=float(np.quantile(d, alpha / 2)),
                      high=float(np.quantile(d, 1 - alpha / 2)))
    return res


def table(kind, rows, rng):
    "A task and its targets and outputs."
    if kind.startswith('binary'):
        y = (rng.random(rows) < 0.25).astype(int)
        p = np.clip(0.3 * y + 0.7 * rng.random(rows), 0, 1)
        return Task('binary', 't', ['0', '1']), y, p.round(2) if 'tied' in kind else p, 0.5
    if kind == 'multiclass':
        y = rng.integers(0, 5, rows)
        P = rng.dirichlet(np.ones(5), rows) + np.eye(5)[y]
        return Task('multiclass', 't', list('abcde')), y, P / P.sum(1, keepdims=True), None
    y = rng.normal(100, 10, rows)
    if 'outlier' in kind: y[-1] = 1e9
    return Task('regression', 't', mean=100, std=10), y, y + rng.normal(0, 5, rows), None


def timed(f):
    t = time.perf_counter(); r = f(); return time.perf_counter() - t, r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', default='300,20000'); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    print(f"{N_BOOT} resamples; medians of {a.repeats}")
    print(f"{'table':<19} {'rows':>7} {'counted s':>10} {'one by one s':>13} {'ratio':>7} {'worst rel diff':>15}")
    for kind in ('binary', 'binary, tied', 'multiclass', 'regression', 'regression, outlier'):
        for rows in map(int, a.rows.split(',')):
            task, y, out, th = table(kind, rows, np.random.default_rng(rows))
            new, old = [], []
            for _ in range(a.repeats):
                t, got = timed(lambda: task_bootstrap(task, y, out, th, N_BOOT)); new.append(t)
                t, want = timed(lambda: one_by_one(task, y, out, th, list(got))); old.append(t)
            worst = max(abs(got[k][e] - w[e]) / max(abs(w[e]), 1e-12) for k, w in want.items() for e in w)
            n, o = statistics.median(new), statistics.median(old)
            print(f"{kind:<19} {rows:>7,} {n:>10.3f} {o:>13.3f} {n / o:>7.2f} {worst:>15.1e}")


if __name__ == '__main__': main()
