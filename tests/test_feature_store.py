"""The feature store in the loop: a pipeline with an event log and views trains, exports, registers and serves with
aggregates looked up by key; the monitor measures training/serving skew."""
import datetime as dt, json, os, sqlite3
from pathlib import Path
import polars as pl
import pytest
from conftest import Served, mlsys
from mlsys.config import run_file
from mlsys.example import example_params
from mlsys.feature_store import load_views, point_in_time, views_hash
from mlsys.registry import Registry
from mlsys.runtime import LoadedModel

SPEED = ['-p', 'trials=0', '-p', 'max_epochs=4', '-p', 'batch_size=256', '-p', 'n_boot=20', '-p', 'explain_rows=20',
         '-p', 'background_rows=10', '--set', 'tracking.mode=disabled']
T = '2013-01-09T18:00:00+00:00'    # the moment the store is materialized and the requests are made
MONITOR_ENV = {'MLSYS_DRIFT_MIN_ROWS': '50', 'MLSYS_DRIFT_MIN_LABELS': '50'}


@pytest.fixture(scope='module')
def flights(tmp_path_factory):
    "`mlsys run` on the flights with their event log and views file, naming them as a user would."
    d = tmp_path_factory.mktemp('flights')
    p = example_params(d, 'flights')
    r = mlsys('run', *[x for k in ('data', 'target', 'id_column', 'time_column', 'split', 'events', 'views')
                       for x in ('-p', f'{k}={p[k]}')], *SPEED, '--set', f"paths.home={d/'home'}")
    assert r.returncode == 0, r.stderr[-4000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    return dict(p | dict(dir=d, home=d/'home', run_dir=run_dir, registry=Registry(d/'home'/'registry'),
                         views_list=load_views(p['views'])))


def test_the_views_go_through_every_stage(flights):
    want = views_hash(flights['views_list'])
    names = [n for v in flights['views_list'] for n in v.names]
    man = json.loads((flights['run_dir']/'features'/'manifest.json').read_text())
    assert man['views_hash'] == want
    q = pl.read_parquet(flights['run_dir']/'features'/'events'/'quarantine.parquet')   # cancelled: never departed
    assert q.height == man['events']['quarantined'] > 0
    assert {v['column'] for vs in q['violations'].to_list() for v in vs} >= {'departed_at'}
    reg = flights['registry']
    m = LoadedModel(reg.read('late', 'production', 'model'), 'x')
    assert m.meta['views_sha256'] == want and [v.hash for v in m.views] == [v.hash for v in flights['views_list']]
    assert set(names) <= {n for n, _ in m.inputs}          # the aggregates are inputs of the exported model
    stored = json.loads(reg.read('late', 'production', 'views'))     # the views file goes with the version
    assert stored == json.loads(run_file(flights['run_dir'], 'views').read_text())
    assert json.loads((flights['run_dir']/'export'/'manifest.json').read_text())['parity']['passed']


def _records(flights, n, at=T):
    "`n` flights as requests at time `at`: the row's columns and keys, no aggregates, no target."
    rows = pl.read_parquet(flights['data']).filter(pl.col('tailnum').is_not_null()).head(n)
    return [{k: v for k, v in r.items() if k not in ('rownames', 'late')} | dict(predict_at=at)
            for r in rows.iter_rows(named=True)]


def _materialize(flights, events, *more):
    r = mlsys('materialize', '--views', flights['views'], '--events', events, '--as-of', T,
              '--set', f"paths.home={flights['home']}", *more)
    return r


def _monitor(flights):
    m = mlsys('monitor', '--policy', 'off', '--events', flights['events'], '--set', f"paths.home={flights['home']}",
              env=os.environ | MONITOR_ENV)
    d = json.loads(m.stdout)
    return d, json.loads((flights['home']/'monitor'/d['window']/'report.json').read_text())['skew']


def test_served_by_key_with_zero_skew_on_a_consistent_store_and_skew_flagged_on_a_truncated_one(flights, tmp_path):
    views, names = flights['views_list'], [n for v in flights['views_list'] for n in v.names]
    first = _materialize(flights, flights['events'])
    assert first.returncode == 0, first.stderr
    again = _materialize(flights, flights['events'])
    assert json.loads(again.stdout) == json.loads(first.stdout)            # idempotent
    s = Served(flights['home'], flights['registry'].root)
    try:
        recs = _records(flights, 120)
        r = s.client.post('/v1/predict', json={'records': recs})
        assert r.status_code == 200, r.text
        assert not any('features_missing' in p for p in r.json()['predictions'])
        def logged():   # the values used, in SQLite within the log's interval
            with sqlite3.connect(flights['home']/'predictions'/'log.sqlite') as c:
                return [json.loads(x) for (x,) in c.execute('SELECT inputs FROM predictions')]
        s.wait(lambda: len(logged()) == len(recs))
        logged = logged()
        served = pl.DataFrame(logged, infer_schema_length=None).with_columns(
            pl.col('predict_at').str.to_datetime(time_zone='UTC'))
        offline = point_in_time(views[1], pl.read_parquet(flights['events']).drop_nulls('departed_at'),
                                served.select('tailnum', 'predict_at'), 'predict_at')
        assert served[views[1].names].equals(offline[views[1].names].cast(pl.Float64)), 'online differs from offline'
        d, skew = _monitor(flights)
        assert [f['feature'] for f in skew['features']] == names and skew['skewed'] == [], skew
        assert all(f['differ'] == 0 and f['rows'] == 120 for f in skew['features']), skew
        assert 'skew' not in ' '.join(d['reasons'])
        # a key the store does not hold, and a request two days after the store was materialized
        odd = [_records(flights, 1)[0] | dict(tailnum='N-NOBODY'),
               _records(flights, 1, at='2013-01-12T18:00:00+00:00')[0]]
        p = s.client.post('/v1/predict', json={'records': odd}).json()['predictions']
        assert p[0]['features_missing'] == {'aircraft': 'unknown key'}, p
        assert set(p[1]['features_missing']) == {'origin', 'aircraft'} and 'stale' in p[1]['features_missing']['origin']
        # the last six hours of departures never reached the store
        ev = pl.read_parquet(flights['events'])
        cut = dt.datetime.fromisoformat(T) - dt.timedelta(hours=6)
        ev.filter(pl.col('departed_at') < cut).write_parquet(tmp_path/'truncated.parquet')
        assert _materialize(flights, tmp_path/'truncated.parquet').returncode == 0
        assert s.client.post('/v1/predict', json={'records': _records(flights, 120)}).status_code == 200
    finally: s.stop()
    d, skew = _monitor(flights)
    assert d['status'] in ('skew', 'drift') and skew['skewed'], skew
    by = {f['feature']: f for f in skew['features']}
    assert by['origin_mean_dep_delay_2h']['share'] > 0.4, by   # every request of the second batch saw a stale origin


def test_materialize_refuses_a_changed_definition(flights, tmp_path):
    changed = Path(flights['views']).read_text().replace('ttl: 2d', 'ttl: 1d')
    (tmp_path/'views.yaml').write_text(changed)
    store = tmp_path/'online.sqlite'
    base = ['--events', flights['events'], '--as-of', T, '--store', store]
    assert mlsys('materialize', '--views', flights['views'], *base).returncode == 0
    r = mlsys('materialize', '--views', tmp_path/'views.yaml', *base)
    assert r.returncode == 2 and 'another definition' in r.stderr, r.stderr
    assert mlsys('materialize', '--views', tmp_path/'views.yaml', *base, '--replace').returncode == 0
