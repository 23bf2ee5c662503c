"Monitoring: scenario detection, the false-alarm rate, delayed labels through a real log, the command, the whole loop."
import json, os, subprocess, threading, time
from pathlib import Path
import numpy as np
import polars as pl
import pytest
from conftest import Served, mlsys
from mlsys.example import example_table, scenario
from mlsys.monitor import drift_report, performance, reference_artifacts, reference_profile, Profile
from mlsys.registry import Registry
from mlsys.runtime import PredictionLog, log_window
from mlsys.tasks import Task


@pytest.fixture(scope='module')
def split():
    t = example_table()
    m = pl.Series(np.random.default_rng(0).random(t.height) < 0.7)
    return t.filter(m), t.filter(~m)


@pytest.fixture(scope='module')
def profile(split):
    train, _ = split
    num = ['tenure', 'monthly_charges', 'total_charges', 'senior_citizen', 'partner', 'dependents']
    cat = [c for c in train.columns if train[c].dtype == pl.String and c not in ('churn',)]
    return reference_profile(train.with_columns(label=pl.col('churn')), num, cat + ['label'])


def test_false_alarm_rate_on_unshifted_windows(profile, split):
    "300 random windows of 1,000 held-out rows: alarms are rare (the rate is printed for the record)."
    _, held = split
    alarms = [drift_report(profile, scenario(held, 'none', seed=s).with_columns(label=pl.col('churn')))['alarm']
              for s in range(300)]
    rate = sum(alarms) / len(alarms)
    print(f'false-alarm rate over {len(alarms)} unshifted windows of 1,000 rows: {rate:.1%}')
    assert rate <= 0.02


@pytest.mark.parametrize('kind', ['covariate', 'constant', 'nulls', 'units', 'label'])
def test_each_scenario_is_detected_on_every_seed(profile, split, kind):
    _, held = split
    for seed in range(20):
        r = drift_report(profile, scenario(held, kind, seed=seed).with_columns(label=pl.col('churn')))
        assert r['alarm'], (kind, seed)
        assert {'covariate': 'contract' in r['drifted'], 'constant': r['broken'] == ['monthly_charges'],
                'nulls': r['broken'] == ['total_charges'], 'units': 'tenure' in r['drifted'],
                'label': r['label_drift']}[kind], (kind, seed, r)


def test_delayed_labels_join_by_request_id_and_a_drop_alerts(tmp_path):
    "Predictions and later labels via a real log: the window joins them; useless scores raise the performance alert."
    log, rng = PredictionLog(tmp_path/'log.sqlite'), np.random.default_rng(0)
    now = time.time()
    rows = [(f'{i:032x}', now - 60, 'churn:1', 'primary', json.dumps({'tenure': int(i % 70)}), float(rng.random()),
             'No', 0.3, 0) for i in range(600)]
    rows += [(f'{i:032x}', now - 60, 'churn:1', 'shadow', '{"tenure": 1}', 0.5, 'No', 0.3, 0)
             for i in range(600)]         # left out
    rows += [(f'{i:032x}', now - 90_000, 'churn:1', 'primary', '{"tenure": 1}', 0.5, 'No', 0.3, 0)
             for i in range(600, 700)]  # too old
    log.add(rows)
    for i in range(0, 600, 2): log.feedback(f'{i:032x}', 'Yes' if rng.random() < 0.3 else 'No')
    log.close()
    w = log_window(tmp_path/'log.sqlite', 'churn:1', 24, now)
    assert w.height == 600 and w['label'].is_not_null().sum() == 300 and w['tenure'].dtype == pl.Int64
    churn = Task('binary', 'churn', ['No', 'Yes'])
    perf = performance(w, churn, 0.84, {'drift.min_labels': 200})
    assert perf['labels'] == 300 and perf['metric'] == 'roc_auc' and abs(perf['value'] - 0.5) < 0.1 and perf['dropped']
    assert not performance(w, churn, 0.84, {'drift.min_labels': 400})['dropped']      # too few labels to judge


@pytest.fixture(scope='module')
def registered(tmp_path_factory, split, example_model):
    "A registry version with its model and drift reference."
    d = tmp_path_factory.mktemp('monitored')
    model = example_model/'export'/'model.onnx'
    arts = reference_artifacts(split[0], model.read_bytes(), d/'reference')
    reg = Registry(d/'registry')
    reg.register('churn', {'model': model} | arts, {}, dict(roc_auc=0.84))
    return reg


def test_monitor_command_exit_status_tells_ok_drift_failure(home, tmp_path, split, registered):
    _, held = split
    scenario(held, 'none', seed=3).write_parquet(tmp_path/'ok.parquet')
    scenario(held, 'units', seed=3).write_parquet(tmp_path/'units.parquet')
    base = ['monitor', '--model', '1', '--registry', registered.root, '--policy', 'alert']
    r = mlsys(*base, '--data', tmp_path/'ok.parquet'); assert r.returncode == 0, r.stderr
    r = mlsys(*base, '--data', tmp_path/'units.parquet')
    assert r.returncode == 1 and 'drift in churn:1' in r.stderr and 'column drifted: tenure' in r.stderr
    d = json.loads(r.stdout)
    assert (home/'monitor'/d['window']/'report.html').exists()
    again = mlsys(*base, '--data', tmp_path/'units.parquet')   # cron runs it again: same answer, nothing new
    assert again.returncode == 1 and json.loads(again.stdout)['repeated']
    assert [h['action'] for h in registered.history('churn')].count('drift') == 1
    assert mlsys(*base, '--data', tmp_path/'missing.parquet').returncode == 2


def test_the_whole_loop(home, tmp_path, split, monkeypatch):
    "Pipeline, serving, drifted traffic, late labels, monitor with retrain: a new version gated, served; none fails."
    # this organization reports fairness without gating it
    monkeypatch.setenv('MLSYS_GATES_MAX_DEMOGRAPHIC_PARITY_DIFFERENCE', '1')
    monkeypatch.setenv('MLSYS_GATES_MAX_EQUALIZED_ODDS_DIFFERENCE', '1')
    monkeypatch.setenv('MLSYS_TRACKING_MODE', 'disabled')
    r = mlsys('run', '--example', '-p', 'trials=0', '-p', 'max_epochs=4')
    assert r.returncode == 0, r.stderr
    reg = Registry(home/'registry')
    assert reg.resolve('churn', 'production') == 1
    s = Served(home, reg.root)
    _, held = split
    shifted = scenario(held, 'covariate', n=800, seed=0)
    failures = []
    try:
        for row in shifted.iter_rows(named=True):
            rec = {k: v for k, v in row.items() if k not in ('rownames', 'churn')}
            resp = s.client.post('/v1/predict', json=rec)
            if resp.status_code != 200: failures.append(resp.status_code); continue
            s.client.post('/v1/feedback', json={'request_id': resp.json()['request_id'], 'label': row['churn']})
        stop = threading.Event()
        def traffic():                                                       # keeps asking while the loop runs
            rec = {k: v for k, v in shifted.row(0, named=True).items() if k not in ('rownames', 'churn')}
            while not stop.is_set():
                resp = s.client.post('/v1/predict', json=rec)
                if resp.status_code != 200: failures.append(resp.status_code)
                time.sleep(0.05)
        t = threading.Thread(target=traffic); t.start()
        try: m = mlsys('monitor', '--policy', 'retrain', '--registry', reg.root,
                       env=os.environ | {'MLSYS_DRIFT_MIN_LABELS': '200'})
        finally: stop.set(); t.join()
        assert m.returncode == 1, m.stderr
        d = json.loads(m.stdout)
        assert d['status'] == 'drift' and d['retrain']['ran'] and d['retrain']['version'] == 2
        prod = reg.resolve('churn', 'production')
        assert prod == (2 if d['retrain']['action'] == 'promote' else 1)
        s.wait(lambda: s.client.post('/v1/predict', json={k: v for k, v in shifted.row(0, named=True).items()
                                                             if k not in ('rownames', 'churn')}).json()['model_version']
                       == f'churn:{prod}')
        actions = [h['action'] for h in reg.history('churn')]
        assert 'drift' in actions and 'retrain' in actions
        assert not failures
    finally: s.stop()
