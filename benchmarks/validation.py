"""Validation throughput and peak memory: mlsys (one polars pass) against plain pandas, pandera and dataframely.

All four evaluate the same contract on the same synthetic table (1,000,000 rows x 20 columns by default, about 1.2 %
of rows defective, every kind of defect planted) and must give the same verdicts row for row: the same quarantined
rows, each with the same (rule, column) violations, and, among the three polars-based ones, the same values.

- `pandas`: the rules written the obvious way with pandas masks (the baseline of every ratio);
- `pandera`: what mlsys did before (mlsys's typing, then pandera's polars backend for the row rules);
- `dataframely`: mlsys's typing, then a dataframely schema's `filter` for the row rules;
- `mlsys`: `mlsys.data.validate`, one lazy polars pass over the batch, then a second look at the rows that broke a rule.

Each measurement runs in its own process, so peak memory (ru_maxrss) is that implementation's alone; runs alternate
between the implementations and the medians are quoted. An implementation whose library is not installed is skipped.

    python benchmarks/validation.py [--rows 1000000] [--repeats 5] [--calls 3]
"""
import argparse, importlib.util, json, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

N_FLOAT, N_INT, N_CAT = 10, 4, 4   # with `id` and the nullable `score`: 20 columns
CATS = ['a', 'b', 'c', 'd', 'e']
SHADOWING = ('type', 'not_finite')   # a cell that broke one of these reports nothing else


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
    df = pl.DataFrame(cols).with_columns(
        score=pl.when(pl.lit(defect(0.02))).then(None).otherwise(pl.lit(rng.random(rows))))
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


# ---- pandas: the baseline ----

def pandas_validate(df, c):
    "The same rules, written the obvious way with pandas masks."
    import pandas as pd
    parts = []
    def add(mask, rule, col):
        rows = np.flatnonzero(mask)
        if len(rows): parts.append(pd.DataFrame({'_row': rows, 'rule': rule, 'column': col,
                                                 'value': df[col].iloc[rows].astype(str).values}))
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


def _timed(fn, df, c, calls):
    "Run `fn(df, c)` `calls` times; the seconds (wall, CPU of all threads) of each call and the last outcome."
    secs = []
    for _ in range(calls):
        t, cpu = time.perf_counter(), time.process_time()
        out = fn(df, c)
        secs.append((time.perf_counter() - t, time.process_time() - cpu))
    return secs, out


def run_pandas(path, calls):
    import pandas as pd, polars as pl
    secs, (accepted, quarantine, v) = _timed(pandas_validate, pd.read_parquet(path), contract(), calls)
    return secs, len(accepted), pl.from_pandas(v)


# ---- what mlsys did before, and dataframely: mlsys's typing, a library for the row rules, the same split ----

def _finish(raw, typed, v, c):
    "Drop rules shadowed by `type`/`not_finite` on the same cell; split accepted from quarantined rows."
    import polars as pl
    invalid = v.filter(pl.col('rule').is_in(SHADOWING)).select('_row', 'column').unique()
    shadowed = v.join(invalid, on=['_row', 'column'], how='semi').filter(~pl.col('rule').is_in(SHADOWING))
    v = (v.join(shadowed, on=['_row', 'rule', 'column'], how='anti').unique(maintain_order=True)
         .sort('_row', 'column', 'rule'))
    rows = pl.int_range(raw.height, dtype=pl.Int64, eager=True).alias('_row')
    reasons = v.group_by('_row').agg(pl.struct('rule', 'column', 'value').alias('violations'))
    accepted = typed.with_columns(rows).join(reasons, on='_row', how='anti')
    quarantine = (raw.with_columns(rows).join(reasons, on='_row', how='inner').sort('_row')
                  .cast({n: pl.String for n in raw.columns}))
    return accepted, quarantine, v


def pandera_validate(raw, c):
    "mlsys's validation before this benchmark's change: pandera's polars backend evaluates the row rules."
    import pandera.polars as pa, polars as pl
    from pandera.errors import SchemaErrors
    from mlsys.data import DTYPES, cast_columns, check_columns
    check_columns(raw, c)
    typed, bad = cast_columns(raw, c)
    finite = lambda d: d.lazyframe.select(pl.col(d.key).is_finite() | pl.col(d.key).is_null())
    def column(n, r):
        checks = [pa.Check.ge(r.min)] if r.min is not None else []
        checks += [pa.Check.le(r.max)] if r.max is not None else []
        checks += [pa.Check.isin(r.categories)] if r.categories is not None else []
        checks += [pa.Check(finite, name='not_finite')] if r.dtype == 'float64' else []
        return pa.Column(DTYPES[r.dtype], checks=checks, nullable=r.nullable, unique=n == c.id_column)
    rules = {'not_nullable': 'null', 'field_uniqueness': 'duplicate_key', 'greater_than_or_equal_to': 'range',
             'less_than_or_equal_to': 'range', 'isin': 'category', 'not_finite': 'not_finite'}
    try: pa.DataFrameSchema({n: column(n, r) for n, r in c.columns.items()}).validate(typed, lazy=True); fc = None
    except SchemaErrors as e: fc = e.failure_cases
    check = pl.col('check').str.extract(r'^(\w+)').replace_strict(rules)
    v = [bad] if fc is None else [bad, fc.select(pl.col('index').cast(pl.Int64).alias('_row'), check.alias('rule'),
                                                 'column', pl.col('failure_case').cast(pl.String).alias('value'))]
    return _finish(raw, typed, pl.concat(v), c)


def dataframely_validate(raw, c):
    "mlsys's typing, then a dataframely schema's `filter` for the row rules (valid rows and per-row failures)."
    import dataframely as dy, polars as pl
    from mlsys.data import cast_columns, check_columns
    check_columns(raw, c)
    typed, bad = cast_columns(raw, c)
    kinds = {'int64': dy.Int64, 'float64': dy.Float64, 'string': dy.String, 'bool': dy.Bool}
    def column(n, r):
        kw = dict(nullable=r.nullable, unique=n == c.id_column)
        if r.dtype in ('int64', 'float64'): kw |= dict(min=r.min, max=r.max)
        if r.dtype == 'float64': kw |= dict(allow_nan=False, allow_inf=False)
        if r.categories is not None: kw['check'] = {'category': lambda e, cats=r.categories: e.is_in(cats)}
        return dy.Datetime(time_zone='UTC', **kw) if r.dtype == 'datetime' else kinds[r.dtype](**kw)
    cols = {n: column(n, r) for n, r in c.columns.items()} | {'_row': dy.Int64(nullable=False)}
    schema = type('Rows', (dy.Schema,), cols)
    good, failure = schema.filter(typed.with_columns(_row=pl.int_range(pl.len(), dtype=pl.Int64)))
    names = {'nullability': 'null', 'unique': 'duplicate_key', 'min': 'range', 'max': 'range', 'inf': 'not_finite',
             'nan': 'not_finite', 'check__category': 'category'}
    f, parts = failure._df, [bad]
    for rc in failure._rule_columns:
        col, rule = rc.rsplit('|', 1)
        if (hit := f.filter(~pl.col(rc))).height:
            parts.append(hit.select('_row', rule=pl.lit(names[rule]), column=pl.lit(col),
                                    value=pl.col(col).cast(pl.String)))
    return _finish(raw, typed, pl.concat(parts), c)


def _run_polars(fn, path, calls):
    import polars as pl
    secs, (accepted, quarantine, v) = _timed(fn, pl.read_parquet(path), contract(), calls)
    return secs, accepted.height, v


def run_mlsys(path, calls):
    from mlsys.data import validate
    def fn(df, c):
        res = validate(df, c, max_quarantine_fraction=1)
        return res.accepted, res.quarantine, res.violations
    return _run_polars(fn, path, calls)


IMPLS = {'pandas': (run_pandas, 'pandas'), 'pandera': (lambda p, k: _run_polars(pandera_validate, p, k), 'pandera'),
         'dataframely': (lambda p, k: _run_polars(dataframely_validate, p, k), 'dataframely'),
         'mlsys': (run_mlsys, 'polars')}


def child(impl, path, out, calls):
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    secs, accepted, v = IMPLS[impl][0](path, int(calls))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    v.select('_row', 'rule', 'column', 'value').write_parquet(out)
    print(json.dumps(dict(secs=secs, peak_mb=peak / 1024, extra_mb=(peak - base) / 1024, accepted=accepted)))


def verdicts(path):
    "The violations of one run, as (row, rule, column) triples (sorted, unique), and with their values."
    import polars as pl
    v = pl.read_parquet(path).with_columns(pl.col('_row').cast(pl.Int64))
    return v.select('_row', 'rule', 'column').unique().sort(pl.all()), v.unique().sort(pl.all())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--repeats', type=int, default=5, help='processes per implementation')
    ap.add_argument('--calls', type=int, default=3, help='validations per process: the first is cold, the rest warm')
    ap.add_argument('--child', nargs=4, metavar=('IMPL', 'PATH', 'OUT', 'CALLS'))
    a = ap.parse_args()
    if a.child: return child(*a.child)
    impls = [i for i, (_, lib) in IMPLS.items() if importlib.util.find_spec(lib)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)/'table.parquet'
        make_table(a.rows, path)
        runs = {i: [] for i in impls}
        for _ in range(a.repeats):
            for impl in impls:
                cmd = [sys.executable, __file__, '--child', impl, str(path), f'{d}/{impl}.parquet', str(a.calls)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
        got = {i: verdicts(f'{d}/{i}.parquet') for i in impls}
    cold = {i: statistics.median(r['secs'][0][0] for r in rs) for i, rs in runs.items()}
    warm = {i: statistics.median(s for r in rs for s, _ in r['secs'][1:]) for i, rs in runs.items() if a.calls > 1}
    cpu = {i: statistics.median(s for r in rs for _, s in r['secs'][1:]) for i, rs in runs.items() if a.calls > 1}
    ratio = lambda med, i: f"{med['pandas'] / med[i]:.2f}x" if 'pandas' in med else '-'
    print(f"{a.rows:,} rows x 20 columns; {a.repeats} processes per implementation, alternating, {a.calls} validations "
          f"each; medians. cold: the first validation in a process (a one-shot ingest job); warm: the later ones "
          f"(batch scoring validates chunk after chunk); CPU: warm, all threads")
    print(f"{'':12}{'cold s':>8}{'vs pandas':>10}{'warm s':>8}{'vs pandas':>10}{'CPU s':>7}{'rows/s warm':>13}"
          f"{'peak MB':>9}"
          f"{'quarantined':>12}{'violations':>11}  verdicts")
    ref, agree = impls[0], True
    for impl, rs in runs.items():
        triples, values = got[impl]
        same = triples.equals(got[ref][0]) and rs[0]['accepted'] == runs[ref][0]['accepted']
        if impl != 'pandas' and 'mlsys' in got: same = same and values.equals(got['mlsys'][1])
        agree &= same
        w = warm.get(impl, float('nan'))
        print(f"{impl:12}{cold[impl]:8.3f}{ratio(cold, impl):>10}{w:8.3f}{ratio(warm, impl) if warm else '-':>10}"
              f"{cpu.get(impl, float('nan')):7.3f}"
              f"{a.rows / w:13,.0f}{statistics.median(r['peak_mb'] for r in rs):9.0f}{a.rows - rs[0]['accepted']:12,}"
              f"{triples.height:11,}  {'same as ' + ref if same else 'DIFFER from ' + ref}")
    print("verdicts identical row for row (rows, rules, columns; values among the polars-based)" if agree else
          "VERDICTS DIFFER")
    if not agree: sys.exit(1)


if __name__ == '__main__': main()
