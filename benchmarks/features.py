"""Feature transforms, measured side by side in one run (medians of repeats):

1. offline transform throughput on 1,000,000 rows: mlsys (polars) against the same transforms written with pandas;
2. online latency per record: `OnlineFeatures` on a dict against the offline path called on a one-row frame;

The point-in-time join and the online store are measured in `benchmarks/feature_store.py`.

    python benchmarks/features.py [--rows 1000000] [--repeats 5]
"""
import argparse, statistics, time
import numpy as np
import pandas as pd
import polars as pl
from mlsys.data import infer_contract
from mlsys.example import EXAMPLE, example_table
from mlsys.features import OnlineFeatures, feature_arrays, fit_features, transform


def pandas_transform(spec, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    "The spec's arithmetic written directly with pandas/numpy, as a team without mlsys would."
    num, cat = [], []
    def raw(t):
        x = pd.to_numeric(df[t.column], errors='coerce').astype(float)
        if t.kind == 'ratio':
            y = pd.to_numeric(df[t.other], errors='coerce').astype(float)
            x = (x / y.where(y != 0)).where(np.isfinite(x) & np.isfinite(y))
        elif t.kind == 'log1p': x = np.log1p(x.clip(lower=0))
        return x.where(np.isfinite(x))
    for t in spec.numeric:
        x = raw(t)
        num += [((x.fillna(t.median).clip(t.lo, t.hi) - t.mean) / t.std).to_numpy(), x.isna().to_numpy(float)]
    for t in spec.categorical:
        if t.kind == 'bins':
            x = raw(type(t)('numeric', t.column))
            cat.append(np.where(x.isna(), 0, np.searchsorted(t.edges, x.to_numpy(), side='right') + 1))
        else: cat.append(df[t.column].map({v: i for i, v in enumerate(t.vocab, 1)}).fillna(0).to_numpy(np.int64))
    return np.column_stack(num), np.column_stack(cat)


def timed(f, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--repeats', type=int, default=5)
    a = ap.parse_args()
    churn = example_table()
    contract = infer_contract(churn, target='churn', id_column='rownames')
    spec = fit_features(churn, contract, **{k: EXAMPLE[k] for k in ('ratios', 'logs', 'bins')})
    big = churn.sample(a.rows, with_replacement=True, seed=0)
    big_pd = big.to_pandas()

    t_pl, (num, cat) = timed(lambda: feature_arrays(spec, transform(spec, big)), a.repeats)
    t_pd, (pnum, pcat) = timed(lambda: pandas_transform(spec, big_pd), a.repeats)
    assert np.allclose(num, pnum, atol=1e-9) and (cat == pcat).all(), "the two implementations disagree"
    print(f"offline, {a.rows:,} rows, {num.shape[1]} num + {cat.shape[1]} cat features (identical results):")
    print(f"  mlsys/polars {a.rows / t_pl:12,.0f} rows/s   pandas {a.rows / t_pd:12,.0f} rows/s   "
          f"ratio {t_pd / t_pl:.2f}x")

    online, recs = OnlineFeatures(spec), churn.head(200).to_dicts()
    frames = [churn.slice(i, 1) for i in range(200)]
    n = len(recs)
    t_on, _ = timed(lambda: [online(r) for r in recs], a.repeats)
    t_off, _ = timed(lambda: [feature_arrays(spec, transform(spec, f)) for f in frames], a.repeats)
    print(f"online, per record: OnlineFeatures {t_on / n * 1e6:8.1f} µs   offline path on a 1-row frame "
          f"{t_off / n * 1e6:8.1f} µs   ratio {t_off / t_on:.1f}x")


if __name__ == '__main__': main()
