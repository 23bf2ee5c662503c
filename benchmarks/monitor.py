"""Drift check on a large window, side by side in one run: the fast path against evidently's DataDriftPreset.

The reference is the example table (7,043 rows); the current window is --rows rows sampled from it with
month-to-month contracts over-represented (a covariate shift). Each contender runs in its own process so its peak
memory (ru_maxrss) is its own, after a warm-up call on 2,000 rows (imports, thread pools); the reference profile is
computed once beforehand, as at registration, and its time is reported apart. Same methods and thresholds for both
(settings' [drift]); the verdicts per column are compared.

    python benchmarks/monitor.py [--rows 1000000]
"""
import argparse, json, resource, subprocess, sys, tempfile, time
from pathlib import Path


def prepare(rows, tmp):
    import numpy as np, polars as pl
    from mlsys.example import example_table
    from mlsys.monitor import contract_kinds, reference_profile
    t = example_table().drop('rownames', 'churn')
    w = (t['contract'] == 'Month-to-month').cast(pl.Float64).to_numpy() * 3 + 1
    idx = np.random.default_rng(0).choice(t.height, rows, p=w / w.sum())
    t[idx.tolist()].write_parquet(tmp/'current.parquet'); t.write_parquet(tmp/'reference.parquet')
    numeric, categorical = contract_kinds(
        dict(columns={c: dict(dtype='float64' if t[c].dtype.is_numeric() else 'string') for c in t.columns}))
    t0 = time.perf_counter(); prof = reference_profile(t, numeric, categorical); took = time.perf_counter() - t0
    (tmp/'profile.json').write_text(prof.to_json())
    return took, len(t.columns)


def contender(which, tmp):
    import polars as pl
    from mlsys.monitor import Profile, drift_report, evidently_report, profile_kinds
    prof = Profile.from_json((tmp/'profile.json').read_text())
    cur, ref = pl.read_parquet(tmp/'current.parquet'), pl.read_parquet(tmp/'reference.parquet')
    run = ((lambda w: {r['column']: r['drifted'] for r in drift_report(prof, w)['columns']}) if which == 'fast' else
           (lambda w: evidently_report(ref, w, *profile_kinds(prof, w.columns))[1]))
    run(cur[:2000])                                   # warm-up: imports and thread pools, for both alike
    t0 = time.perf_counter(); verdicts = run(cur); took = time.perf_counter() - t0
    print(json.dumps(dict(seconds=took, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          verdicts=verdicts)))


def main(rows):
    tmp = Path(tempfile.mkdtemp())
    prof_s, ncols = prepare(rows, tmp)
    res = {w: json.loads(subprocess.run([sys.executable, __file__, '--contender', w, '--tmp', str(tmp)],
                                        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
           for w in ('fast', 'evidently')}
    f, e = res['fast'], res['evidently']
    same = all(f['verdicts'][c] == v for c, v in e['verdicts'].items())
    print(f"window: {rows:,} rows x {ncols} columns; reference profile computed once in {prof_s:.2f} s")
    print(f"{'':12s} {'seconds':>8s} {'peak MB':>8s}")
    for k, r in res.items(): print(f"{k:12s} {r['seconds']:8.2f} {r['peak_mb']:8.0f}")
    print(f"speed-up {e['seconds'] / f['seconds']:.0f}x; memory {e['peak_mb'] / f['peak_mb']:.1f}x less; "
          f"same verdicts on all {len(e['verdicts'])} columns: {same}; "
          f"drifted: {sorted(c for c, v in e['verdicts'].items() if v)}")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rows', type=int, default=1_000_000)
    ap.add_argument('--contender'); ap.add_argument('--tmp')
    a = ap.parse_args()
    contender(a.contender, Path(a.tmp)) if a.contender else main(a.rows)
