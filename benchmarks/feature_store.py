"""The feature store, measured side by side in one run (2 cores: medians of repeats):

1. point-in-time join throughput: the flights' six aggregates (two views) joined onto every 2013 departure (328,436
   rows over 336,776 events), with arrival times (late events hidden) and without;
2. the lift: the flights pipeline's train stage (network and logistic baseline, temporal split) on the first `--days`
   days, with the views' aggregates and with the row's columns alone; test ROC-AUC of each;
3. the lookup's cost per request: `online_values` (two SQLite lookups) per record in-process, and `mlsys serve` under
   wrk at concurrency 1 and 8 with a record that sends its keys (the server looks the aggregates up) beside the same
   record sending the aggregates itself (no lookup), alternating rounds.

    python benchmarks/feature_store.py [--days 60] [--seconds 8] [--rounds 3]
"""
import argparse, json, os, statistics, sys, tempfile, time, warnings
from pathlib import Path
import httpx
import polars as pl
import yaml
warnings.filterwarnings('ignore')
sys.path.insert(0, str(Path(__file__).parent))
from serve import LUA, median_us, port, start, wrk
from mlsys.data import run_ingest
from mlsys.example import FLIGHT_VIEWS, flight_tables
from mlsys.export import run_export
from mlsys.feature_store import FeatureView, OnlineStore, join_views, utc_time, validate_events, views_from
from mlsys.features import run_features
from mlsys.serve import online_values
from mlsys.train import run_train

BIN = Path(sys.executable).parent


def timed(f, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def join_throughput(repeats):
    rows, events = flight_tables()
    views = views_from(yaml.safe_load(FLIGHT_VIEWS))
    ev = validate_events(events, views, max_quarantine_fraction=0.2).accepted.drop('_row')
    blind = [FeatureView(**(v.to_dict() | dict(arrival_column=None))) for v in views]
    n = sum(len(v.names) for v in views)
    print(f"1. point-in-time join, {rows.height:,} rows x {n} aggregates over {ev.height:,} accepted events "
          f"(median of {repeats}):")
    for label, vs in (('with arrival times', views), ('event time only', blind)):
        t = timed(lambda: join_views(rows, vs, ev, 'predict_at'), repeats)
        print(f"   {label:20s} {t:6.2f} s   {rows.height / t:10,.0f} rows/s")
    return views


def pipeline(d:Path, days:int, with_views:bool, epochs:int) -> Path:
    "Ingest, features and train on the first `days` days; the run directory."
    run = d/('views' if with_views else 'rows')
    more = dict(events=str(d/'events.parquet'), views=str(d/'views.yaml')) if with_views else {}
    run_ingest(d/'rows.parquet', run/'ingest', target='late', id_column='rownames', time_column='predict_at')
    run_features(run, run/'features', split='temporal', **more)
    run_train(run, run/'train', trials=0, max_epochs=epochs, batch_size=512, settings={'tracking.mode': 'disabled'})
    return run


def lift(d:Path, days:int, epochs:int):
    rows, events = flight_tables(days)
    rows.write_parquet(d/'rows.parquet'); events.write_parquet(d/'events.parquet')
    (d/'views.yaml').write_text(FLIGHT_VIEWS)
    print(f"\n2. lift: {rows.height:,} departures of the first {days} days, temporal split, {epochs} epochs; "
          "test ROC-AUC:")
    runs = {}
    for with_views in (False, True):
        t0 = time.perf_counter()
        runs[with_views] = run = pipeline(d, days, with_views, epochs)
        m = json.loads((run/'train'/'metrics.json').read_text())
        name = 'row + aggregates' if with_views else 'row columns only'
        print(f"   {name:18s} network {m['model']['test']['roc_auc']:.3f}"
              f"   logistic baseline {m['baseline']['test']['roc_auc']:.3f}   ({time.perf_counter() - t0:.0f} s)")
    return runs[True], rows, events


def lookup_cost(d:Path, run:Path, rows, events, views, seconds, rounds):
    home = d/'home'
    T = rows['predict_at'].max()
    store = OnlineStore(home/'online'/'features.sqlite')
    ev = validate_events(events, views, max_quarantine_fraction=0.2).accepted.drop('_row')
    store.materialize(views, ev, T)
    first = rows.filter(pl.col('predict_at') == T).row(0, named=True)
    rec = {k: v for k, v in first.items() if k not in ('rownames', 'late')}
    rec['predict_at'] = T.isoformat()
    full = dict(rec)
    online_values(views, store, [full], 'predict_at')
    us = median_us(lambda: online_values(views, store, [dict(rec)], 'predict_at'))
    print(f"\n3. lookup per record in-process (two views, SQLite): {us:.1f} µs (median)")
    run_export(run, run/'export', repeats=20)
    env = os.environ | dict(MLSYS_PATHS_HOME=str(home), MLSYS_TRACKING_MODE='disabled')
    bodies = {}
    for name, body in (('keys (lookup)', rec), ('aggregates sent', full)):
        (d/f'{len(bodies)}.json').write_text(json.dumps(body))
        (d/f'{len(bodies)}.lua').write_text(LUA % (d/f'{len(bodies)}.json'))
        bodies[name] = d/f'{len(bodies)}.lua'
    p = port()
    url = f'http://127.0.0.1:{p}'
    proc, _ = start([str(BIN/'mlsys'), 'serve', '--model', str(run/'export'/'model.onnx'), '--port', str(p)],
                    lambda: httpx.get(url + '/readyz').status_code == 200, env)
    try:
        r = httpx.post(url + '/v1/predict', json=rec).json()
        assert 'features_missing' not in r['predictions'][0], r
        res = {(n, c): [] for n in bodies for c in (1, 8)}
        for _ in range(rounds):
            for c in (1, 8):
                for n, lua in bodies.items(): res[n, c].append(wrk(url + '/v1/predict', str(lua), c, seconds))
    finally:
        proc.terminate(); proc.wait(30)
    print(f"   mlsys serve, wrk {seconds} s x {rounds} rounds (median round):")
    for c in (1, 8):
        med = {n: sorted(res[n, c], key=lambda x: x['rps'])[len(res[n, c]) // 2] for n in bodies}
        for n, m in med.items():
            print(f"   c={c} {n:16s} {m['rps']:8,.0f} req/s   p50 {m['p50']:.3f} ms   p99 {m['p99']:.3f} ms")
        a, b = med['keys (lookup)'], med['aggregates sent']
        print(f"   c={c} the lookup costs {(a['p50'] - b['p50']) * 1e3:+.0f} µs at p50; "
              f"req/s ratio {a['rps'] / b['rps']:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--days', type=int, default=60)
    ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--seconds', type=int, default=8)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    views = join_throughput(a.repeats)
    with tempfile.TemporaryDirectory() as d:
        run, rows, events = lift(Path(d), a.days, a.epochs)
        lookup_cost(Path(d), run, rows, events, views, a.seconds, a.rounds)


if __name__ == '__main__': main()
