"""Validation throughput and peak memory: mlsys (polars + pandera) against a straightforward pandas implementation.

Both evaluate the same rules on the same synthetic table (1,000,000 rows x 20 columns by default, with about 0.5% of
rows defective) and must agree on every violation count. Each measurement runs in its own process, so peak memory
(ru_maxrss) is that implementation's alone; runs alternate between the implementations and the medians are quoted.

    python benchmarks/validation.py [--rows 1000000] [--repeats 3]
"""
import argparse, json, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

N_FLOAT, N_INT, N_CAT = 10, 4, 4   # with `id` and the nullable `score`: 20 columns
CATS = ['a', 'b', 'c', 'd', 'e']


def make_table(rows: int, path: Path, seed: int = 0):
    "A synthetic table with planted defects of every kind, written as parquet."
    import polars as pl
    rng = np.random.default_rng(seed)
    def defect(p=0.0005): return rng.random(rows) < p
    cols = {'id': np.arange(rows, dtype=np.int64)}
    cols['id'][defect()] = 0                                          # duplicate keys
    for i in range(N_FLOAT):
        x = rng.normal(0, 1, rows).clip(-4.9, 4.9)
        x[defect()] = 50.0; x[defect(0.0001)] = np.nan; x[defect(0.0001)] = np.inf
        cols[f'f{i}'] = x
    for i in range(N_INT): cols[f'i{i}'] = np.where(defect(), 1000, rng.integers(0, 101, rows))
    for i in range(N_CAT): cols[f'c{i}'] = np.where(defect(), 'zzz', rng.choice(CATS, rows))
    df = pl.DataFrame(cols).with_columns(score=pl.when(pl.lit(defect(0.02))).then(None).otherwise(pl.lit(rng.random(rows))))
    nulls = defect()
    df = df.with_columns(pl.when(pl.lit(nulls)).then(None).otherwise(pl.col('c0')).alias('c0'))
    df.write_parquet(path)


def contract():
    from mlsys.data import ColumnRule, Contract
    cols = {'id': ColumnRule('int64', nullable=False)}
    cols |= {f'f{i}': ColumnRule('float64', nullable=False, min=-5, max=5) for i in range(N_FLOAT)}
    cols |= {f'i{i}': ColumnRule('int64', nullable=False, min=0, max=100) for i in range(N_INT)}
    cols |= {f'c{i}': ColumnRule('string', nullable=False, categories=CATS) for i in range(N_CAT)}
    cols['score'] = ColumnRule('float64', nullable=True, min=0, max=1)
    return Contract(cols, id_column='id')


def run_mlsys(path):
    import polars as pl
    from mlsys.data import validate
    df, c = pl.read_parquet(path), contract()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    res = validate(df, c, max_quarantine_fraction=1)
    secs = time.perf_counter() - t
    counts = {f'{r}:{col}': n for r, col, n in res.by_rule().rows()}
    return secs, base, res.accepted.height, res.quarantine.height, counts


def pandas_validate(df, c):
    "The same rules, written the obvious way with pandas masks."
    import pandas as pd
    parts = []
    def add(mask, rule, col):
        rows = np.flatnonzero(mask)
        if len(rows): parts.append(pd.DataFrame({'_row': rows, 'rule': rule, 'column': col, 'value': df[col].iloc[rows].astype(str).values}))
    for col, r in c.columns.items():
        s = df[col]
        isna = s.isna().to_numpy()
        if r.dtype == 'float64':   # pandas reads a missing float as NaN: NaN is missing where allowed, else not finite
            arr = s.to_numpy(dtype=float)
            add(np.isinf(arr) | (np.isnan(arr) & (not r.nullable)), 'not_finite', col)
            valid = np.isfinite(arr)
        else:
            if not r.nullable: add(isna, 'null', col)
            valid = ~isna
        if r.min is not None: add(valid & (s < r.min).to_numpy(), 'range', col)
        if r.max is not None: add(valid & (s > r.max).to_numpy(), 'range', col)
        if r.categories is not None: add(valid & ~s.isin(r.categories).to_numpy(), 'category', col)
        if col == c.id_column: add(s.duplicated(keep=False).to_numpy(), 'duplicate_key', col)
    v = pd.concat(parts, ignore_index=True)
    bad = np.zeros(len(df), bool); bad[v['_row'].unique()] = True
    return df[~bad], df[bad], v


def run_pandas(path):
    import pandas as pd
    df, c = pd.read_parquet(path), contract()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    accepted, quarantine, v = pandas_validate(df, c)
    secs = time.perf_counter() - t
    counts = {f'{r}:{col}': int(n) for (r, col), n in v.groupby(['rule', 'column']).size().items()}
    return secs, base, len(accepted), len(quarantine), counts


def child(impl, path):
    secs, base, acc, quar, counts = {'mlsys': run_mlsys, 'pandas': run_pandas}[impl](path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(secs=secs, peak_mb=peak / 1024, extra_mb=(peak - base) / 1024, accepted=acc, quarantined=quar,
                          counts=counts)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--child', nargs=2, metavar=('IMPL', 'PATH'))
    a = ap.parse_args()
    if a.child: return child(*a.child)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)/'table.parquet'
        make_table(a.rows, path)
        runs = {'mlsys': [], 'pandas': []}
        for _ in range(a.repeats):
            for impl in runs:
                out = subprocess.run([sys.executable, __file__, '--child', impl, str(path)], capture_output=True, text=True, check=True)
                runs[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
    m, p = runs['mlsys'][0], runs['pandas'][0]
    differ = {k: (m['counts'].get(k), p['counts'].get(k)) for k in m['counts'] | p['counts'] if m['counts'].get(k) != p['counts'].get(k)}
    print(f"{a.rows:,} rows x 20 columns, {a.repeats} runs each, medians:")
    print(f"{'':8}{'seconds':>10}{'rows/s':>14}{'peak MB':>10}{'extra MB':>10}{'quarantined':>13}")
    med = {}
    for impl, rs in runs.items():
        s = statistics.median(r['secs'] for r in rs)
        med[impl] = s
        print(f"{impl:8}{s:10.3f}{a.rows / s:14,.0f}{statistics.median(r['peak_mb'] for r in rs):10.0f}"
              f"{statistics.median(r['extra_mb'] for r in rs):10.0f}{rs[0]['quarantined']:13,}")
    print(f"throughput ratio mlsys/pandas: {med['pandas'] / med['mlsys']:.2f}x")
    print(f"violation counts agree ({sum(m['counts'].values()):,} violations)" if not differ else f"counts differ (mlsys, pandas): {differ}")


if __name__ == '__main__': main()
