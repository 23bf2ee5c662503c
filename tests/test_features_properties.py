"Properties of features: the three forms agree on any record; point-in-time joins match a brute-force reference."
import datetime as dt, math
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from mlsys.data import ColumnRule, Contract
from mlsys.feature_store import Aggregate, FeatureView, OnlineStore, point_in_time, point_in_time_reference
from mlsys.features import check_parity, fit_features, split_rows

SLOW = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CONTRACT = Contract({'age': ColumnRule('int64'), 'spend': ColumnRule('float64'), 'visits': ColumnRule('float64'),
                     'member': ColumnRule('bool'),
                     'plan': ColumnRule('string', categories=['basic', 'plus', 'pro', ''])})
SCHEMA = {'age': pl.Int64, 'spend': pl.Float64, 'visits': pl.Float64, 'member': pl.Boolean, 'plan': pl.String}
rng = np.random.default_rng(0)
TRAIN = pl.DataFrame({'age': rng.integers(18, 90, 300), 'spend': rng.lognormal(3, 1, 300),
                      'visits': rng.poisson(4, 300) * 1.0, 'member': rng.random(300) < 0.4,
                      'plan': rng.choice(['basic', 'plus', 'pro', ''], 300)}, schema=SCHEMA)
SPEC = fit_features(TRAIN, CONTRACT, ratios=[('spend', 'visits')], logs=['spend'], bins={'age': 5})

extreme = st.sampled_from([0.0, -0.0, 1e300, -1e300, 5e-324, float('nan'), float('inf'), float('-inf')])
number = st.none() | extreme | st.floats(allow_nan=True, allow_infinity=True)
record = st.fixed_dictionaries({
    'age': st.none() | st.integers(-2**62, 2**62),
    'spend': number, 'visits': number, 'member': st.none() | st.booleans(),
    'plan': st.none() | st.sampled_from(['basic', 'plus', 'pro', '', 'unseen', 'Basic', ' basic'])
            | st.text(max_size=5)})


@SLOW
@given(st.lists(record, min_size=1, max_size=30))
def test_offline_online_and_graph_forms_agree(records):
    diffs = check_parity(SPEC, pl.DataFrame(records, schema=SCHEMA), tol=1e-6)
    assert diffs['online_cat'] == diffs['graph_cat'] == 0


def test_spec_fits_on_the_rows_it_is_given_only():
    other = fit_features(TRAIN.head(100), CONTRACT)
    assert other.hash != fit_features(TRAIN, CONTRACT).hash
    assert '' not in next(t for t in SPEC.transforms if t.column == 'plan').vocab   # '' is the unknown bucket


T0 = dt.datetime(2024, 3, 10, 12, tzinfo=dt.timezone.utc)
moment = st.integers(-40, 40).map(lambda h: T0 + dt.timedelta(hours=6 * h))   # coarse, to make ties likely
zone = st.sampled_from(['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata'])
AGGS = [Aggregate('count', None, '2d'), Aggregate('sum', 'x', '3d'), Aggregate('mean', 'x', '1d'),
        Aggregate('last', 'x', '36h')]
VIEW = FeatureView('v', 'entity', 'at', AGGS)
ARRIVING = FeatureView('v', 'entity', 'at', AGGS, arrival_column='arrived')   # events reach the log late
event = st.tuples(st.sampled_from(['a', 'b', 'c']), moment, st.none() | st.floats(-1e6, 1e6, allow_nan=False))
# how long after it happened an event reached the log: none (never), early (clock skew), on time, late, very late
lateness = st.none() | st.sampled_from([-6, 0, 0, 3, 6, 30, 60, 200]).map(lambda h: dt.timedelta(hours=h))


def _same(a, b):
    if a is None or b is None: return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@SLOW
@given(st.lists(event, max_size=40),
       st.lists(st.tuples(st.sampled_from(['a', 'b', 'c', 'never']), moment), min_size=1, max_size=15), zone, zone)
def test_point_in_time_join_matches_brute_force(evs, rows, ev_zone, row_zone):
    """Events arrive in any order (late ones included), share timestamps, come in another time zone than the rows;
    some rows' entities have no events."""
    events = pl.DataFrame({'entity': [e[0] for e in evs], 'at': [e[1] for e in evs], 'x': [e[2] for e in evs]},
                          schema={'entity': pl.String, 'at': pl.Datetime('us', 'UTC'), 'x': pl.Float64})
    events = events.with_columns(pl.col('at').dt.convert_time_zone(ev_zone))
    labelled = (pl.DataFrame({'entity': [r[0] for r in rows], 'ts': [r[1] for r in rows]},
                             schema={'entity': pl.String, 'ts': pl.Datetime('ms', 'UTC')})
                .with_columns(pl.col('ts').dt.convert_time_zone(row_zone)))
    fast = point_in_time(VIEW, events, labelled, 'ts')
    assert fast.select('entity', 'ts').equals(labelled)
    ref = point_in_time_reference(VIEW, events, labelled, 'ts')
    for f, r in zip(fast.select(VIEW.names).to_dicts(), ref):
        assert all(_same(f[k], r[k]) for k in r), (f, r)


def _arriving(evs, lags):
    "An event log with arrival times: each event `lag` after it happened (never, when `lag` is None)."
    return pl.DataFrame({'entity': [e[0] for e in evs], 'at': [e[1] for e in evs], 'x': [e[2] for e in evs],
                         'arrived': [None if g is None else e[1] + g for e, g in zip(evs, lags)]},
                        schema={'entity': pl.String, 'at': pl.Datetime('us', 'UTC'), 'x': pl.Float64,
                                'arrived': pl.Datetime('us', 'UTC')})


@SLOW
@given(st.lists(st.tuples(event, lateness), max_size=40),
       st.lists(st.tuples(st.sampled_from(['a', 'b', 'c', 'never']), moment), min_size=1, max_size=15), zone)
def test_point_in_time_join_with_arrival_times_matches_brute_force(evs, rows, ev_zone):
    """A row sees only events that had arrived by its time: late ones (even later than a window), ones that arrive
    'before' they happen (clock skew: they count from when they happened), and ones that never arrive."""
    events = _arriving([e for e, _ in evs], [g for _, g in evs]).with_columns(
        pl.col('arrived').dt.convert_time_zone(ev_zone))
    labelled = pl.DataFrame({'entity': [r[0] for r in rows], 'ts': [r[1] for r in rows]},
                            schema={'entity': pl.String, 'ts': pl.Datetime('us', 'UTC')})
    fast = point_in_time(ARRIVING, events, labelled, 'ts')
    ref = point_in_time_reference(ARRIVING, events, labelled, 'ts')
    for f, r in zip(fast.select(ARRIVING.names).to_dicts(), ref):
        assert all(_same(f[k], r[k]) for k in r), (f, r)


def test_arrival_times_hide_what_had_not_arrived():
    "A hand-checked case: an event that happened in the window but arrives after the row's time is not seen."
    t = T0
    events = _arriving([('a', t - dt.timedelta(hours=5), 1.0), ('a', t - dt.timedelta(hours=3), 10.0),
                        ('a', t - dt.timedelta(days=4), 100.0)],
                       [dt.timedelta(0), dt.timedelta(hours=4), dt.timedelta(days=5)])
    got = point_in_time(ARRIVING, events, pl.DataFrame({'entity': ['a'], 'ts': [t]}), 'ts').row(0, named=True)
    assert [got[n] for n in ARRIVING.names] == [1, 1.0, 1.0, 1.0]
    blind = point_in_time(VIEW, events, pl.DataFrame({'entity': ['a'], 'ts': [t]}), 'ts').row(0, named=True)
    assert [blind[n] for n in VIEW.names] == [2, 11.0, 5.5, 10.0]


@SLOW
@given(st.lists(st.tuples(event, lateness), min_size=1, max_size=40), moment)
def test_online_store_equals_offline_at_the_same_time(tmp_path, evs, when):
    events = _arriving([e for e, _ in evs], [g for _, g in evs])
    store = OnlineStore(tmp_path/f'store-{len(evs)}-{when:%Y%m%d%H}.sqlite')
    store.materialize(ARRIVING, events, when, replace=True)
    ents = sorted(set(events['entity']))
    offline = point_in_time(ARRIVING, events, pl.DataFrame({'entity': ents, 't': [when] * len(ents)}), 't')
    for row in offline.to_dicts():
        online, why = store.lookup(ARRIVING, row['entity'], now=when.timestamp())
        assert why is None and all(_same(online[n], row[n]) for n in ARRIVING.names), (online, row)


@SLOW
@given(st.lists(moment, min_size=3, max_size=60), st.integers(0, 2**32 - 1))
def test_temporal_split_never_trains_on_the_future(times, seed):
    df = pl.DataFrame({'t': times}, schema={'t': pl.Datetime('us', 'UTC')})
    labels, info = split_rows(df, 'temporal', (0.6, 0.2, 0.2), seed, time_column='t')
    spans = {k: df.filter(labels == k)['t'] for k in ('train', 'valid', 'test')}
    later = [s for s in (spans['valid'], spans['test']) if len(s)]
    if len(spans['train']): assert all(spans['train'].max() < s.min() for s in later)
    if len(spans['valid']) and len(spans['test']): assert spans['valid'].max() < spans['test'].min()
    assert sum(info['counts'].values()) == len(times)


@pytest.mark.parametrize('method', ['random', 'stratified'])
def test_random_and_stratified_splits_are_reproducible_and_balanced(method):
    df = pl.DataFrame({'y': ['yes'] * 300 + ['no'] * 700})
    a, info = split_rows(df, method, seed=3, target='y')
    assert a.to_list() == split_rows(df, method, seed=3, target='y')[0].to_list()
    assert a.to_list() != split_rows(df, method, seed=4, target='y')[0].to_list()
    assert info['counts'] == {'train': 700, 'valid': 150, 'test': 150}
    if method == 'stratified':
        assert df.with_columns(a).filter(pl.col('split') == 'test')['y'].eq('yes').sum() == 45
