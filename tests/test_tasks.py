"Every kind of tabular model (multiclass, regression) through pipeline, server, scoring, monitor; a user's own network."
import json, os
from pathlib import Path
from types import SimpleNamespace
import numpy as np
import polars as pl
import pytest
from conftest import Served, mlsys
from mlsys.config import run_file
from mlsys.example import DATASETS, dataset_table
from mlsys.registry import Registry
from mlsys.runtime import LoadedModel
from mlsys.serve import parse_records

SPEED = ['-p', 'trials=0', '-p', 'max_epochs=30', '-p', 'batch_size=64', '-p', 'n_boot=20', '-p', 'explain_rows=20',
         '-p', 'background_rows=10', '--set', 'tracking.mode=disabled']   # a small run; no parameter about the task
WANT = dict(penguins=('multiclass', 'accuracy'), salaries=('regression', 'r2'))
WIDE = '''
import torch
from torch import nn
from mlsys.train import TabularModule

class Wide(TabularModule):
    "A user's network: a linear model over the numeric block and one small embedding per categorical column."
    def __init__(self, n_num, cardinalities, task, emb=4, **kw):
        super().__init__(task, **kw)
        self.embs = nn.ModuleList(nn.Embedding(c, emb) for c in cardinalities)
        self.out = nn.Linear(n_num + emb * len(cardinalities), self.task.n_outputs)

    def forward(self, num, cat):
        z = self.out(torch.cat([num, *[e(cat[:, i]) for i, e in enumerate(self.embs)]], 1))
        return z if self.task.kind == 'multiclass' else z.squeeze(1)
'''


def _run(name, d, *args, env=None):
    "`mlsys run` on a dataset written as CSV, with only data, target and id column named; the run."
    dataset_table(name).write_csv(d/'data.csv')
    p = DATASETS[name]['params']
    r = mlsys('run', '-p', f"data={d/'data.csv'}", '-p', f"target={p['target']}", '-p', f"id_column={p['id_column']}",
              *SPEED, '--set', f"paths.home={d/'home'}", *args, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    return SimpleNamespace(name=name, dir=d, home=d/'home', run_dir=Path(r.stdout.strip().splitlines()[-1]),
                           table=dataset_table(name), target=p['target'], id=p['id_column'],
                           registry=Registry(d/'home'/'registry'))


@pytest.fixture(scope='module', params=list(WANT))
def task_run(request, tmp_path_factory):
    return _run(request.param, tmp_path_factory.mktemp(request.param))


def _records(run, n):
    "`n` rows of the table as request records: no key, no target."
    return [{k: v for k, v in r.items() if k not in (run.id, run.target)}
            for r in run.table.head(n).iter_rows(named=True)]


def test_the_task_is_inferred_and_recorded_in_every_stage(task_run):
    kind, metric = WANT[task_run.name]
    man = {s: json.loads((task_run.run_dir/s/'manifest.json').read_text()) for s in ('train', 'export', 'register')}
    assert man['train']['task']['kind'] == kind and man['export']['task']['kind'] == kind
    assert man['export']['parity']['passed'] and man['register']['promoted']
    v = task_run.registry.show(task_run.target, 'production')
    assert v['metrics']['task'] == kind and v['metrics']['metric'] == metric and np.isfinite(v['metrics'][metric])
    ev = json.loads(run_file(task_run.run_dir, 'evaluation').read_text())
    assert ev['task']['kind'] == kind and ev['headline']['name'] == metric
    tm = json.loads(run_file(task_run.run_dir, 'train_metrics').read_text())
    assert set(tm['model']['test']) == set(tm['baseline']['test']) and metric in tm['model']['test']


def test_the_server_answers_per_task(task_run):
    kind, _ = WANT[task_run.name]
    s = Served(task_run.home, task_run.registry.root)
    try:
        r = s.client.post('/v1/predict', json={'records': _records(task_run, 5)})
        assert r.status_code == 200, r.text
        preds = r.json()['predictions']
        one = s.client.get('/openapi.json').json()['paths']['/v1/predict']['post']['responses']['200']
        item = one['content']['application/json']['schema']['properties']['predictions']['items']
        if kind == 'multiclass':
            classes = sorted(task_run.table[task_run.target].drop_nulls().unique().to_list())
            assert all(p['prediction'] in classes and sorted(p['probabilities']) == classes for p in preds)
            assert all(abs(sum(p['probabilities'].values()) - 1) < 1e-4 for p in preds)
            assert all(p['probability'] == max(p['probabilities'].values()) for p in preds)
            assert sorted(item['properties']['probabilities']['properties']) == classes
            good, bad = classes[0], 'Emperor'
        else:
            values = [p['prediction'] for p in preds]
            assert all(isinstance(v, float) for v in values) and 'probability' not in preds[0]
            assert (task_run.table[task_run.target].min() / 2 < np.mean(values)
                    < task_run.table[task_run.target].max() * 2)
            assert item['properties']['prediction']['type'] == 'number'
            good, bad = 120_000, 'a lot'
        exported = LoadedModel(task_run.registry.read(task_run.target, 'production'), 'as exported')
        recs = _records(task_run, 5)
        recs[1] = {**recs[1], **{c: None for c, _ in exported.inputs if exported.columns[c].get('nullable', True)}}
        served = s.client.post('/v1/predict', json={'records': recs}).json()['predictions']
        want = exported.predict(parse_records(json.dumps({'records': recs}).encode(), exported)[0])
        got = [p['probabilities'] if kind == 'multiclass' else p['prediction'] for p in served]
        got = [list(g.values()) if kind == 'multiclass' else g for g in got]   # classes in the model's order
        assert np.allclose(np.array(got, np.float32), want, atol=1e-6), (got, want)  # packed and fused: as exported
        rid = preds[0]['request_id']
        assert s.client.post('/v1/feedback', json={'request_id': rid, 'label': good}).status_code == 202
        wrong = s.client.post('/v1/feedback', json={'request_id': rid, 'label': bad})
        assert wrong.status_code == 422 and wrong.json()['problems'][0]['column'] == 'label', wrong.text
    finally: s.stop()


def test_batch_scoring_and_the_monitor_per_task(task_run, tmp_path):
    kind, metric = WANT[task_run.name]
    home = ['--set', f'paths.home={task_run.home}']
    task_run.table.drop(task_run.target).write_csv(tmp_path/'batch.csv')
    r = mlsys('score', '--data', tmp_path/'batch.csv', '--out', tmp_path/'scored', *home)
    assert r.returncode == 0, r.stderr
    preds, quarantine = (pl.read_parquet(tmp_path/'scored'/'predictions'),
                         pl.read_parquet(tmp_path/'scored'/'quarantine'))
    assert preds.height + quarantine.height == task_run.table.height and preds.height > 0
    if kind == 'multiclass':
        classes = sorted(task_run.table[task_run.target].drop_nulls().unique().to_list())
        assert preds['prediction'].dtype == pl.String and set(preds['prediction']) <= set(classes)
        probs = preds.select(f'probability_{c}' for c in classes).to_numpy()
        assert np.allclose(probs.sum(1), 1, atol=1e-4) and np.allclose(probs.max(1), preds['probability'].to_numpy())
    else: assert preds['prediction'].dtype == pl.Float64 and 'probability' not in preds.columns
    task_run.table.write_parquet(tmp_path/'labelled.parquet')      # the same rows with their targets: no drop
    m = mlsys('monitor', '--data', tmp_path/'labelled.parquet', '--policy', 'off', *home,
              env=os.environ | {'MLSYS_DRIFT_MIN_LABELS': '50', 'MLSYS_DRIFT_MIN_ROWS': '50'})
    assert m.returncode in (0, 1), m.stderr
    d = json.loads(m.stdout)
    rep = json.loads((task_run.home/'monitor'/d['window']/'report.json').read_text())
    perf = rep['performance']
    assert perf['metric'] == metric and perf['labels'] == task_run.table.height and quarantine.height == 0
    scored = task_run.table.join(preds, on=task_run.id)                # the batch scorer's answers for the same rows
    y, pred = scored[task_run.target].to_numpy(), scored['prediction'].to_numpy()
    want = (float((y == pred).mean()) if kind == 'multiclass'
            else 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    assert abs(perf['value'] - want) < 1e-6, (perf, want)                # the monitor's metric, computed independently
    assert perf['dropped'] == (perf['value'] < perf['reference'] - 0.05)
    assert perf['dropped'] == any(r.endswith('at registration') for r in d['reasons'])
    watched = {c['column'] for c in rep['drift']['columns']}
    assert {'probability', 'label'} <= watched and (('prediction' in watched) == (kind == 'multiclass'))


def test_your_own_network_goes_through_every_stage(tmp_path):
    "A LightningModule of the user's, in a package of theirs: trained by `mlsys run`, exported with parity, served."
    (tmp_path/'my_nets').mkdir()
    (tmp_path/'my_nets'/'__init__.py').write_text('')
    (tmp_path/'my_nets'/'wide.py').write_text(WIDE)
    env = os.environ | {'PYTHONPATH': os.pathsep.join([str(tmp_path), os.environ.get('PYTHONPATH', '')])}
    run = _run('penguins', tmp_path, '-p', 'model=my_nets.wide:Wide', '-p', 'hparams={emb: 3}', env=env)
    train = json.loads((run.run_dir/'train'/'manifest.json').read_text())
    assert train['model'] == 'my_nets.wide:Wide' and train['hparams'] == {'emb': 3}
    export = json.loads((run.run_dir/'export'/'manifest.json').read_text())
    assert export['parity']['passed'] and export['task']['kind'] == 'multiclass'
    s = Served(run.home, run.registry.root, env={'PYTHONPATH': env['PYTHONPATH']})
    try:
        r = s.client.post('/v1/predict', json=_records(run, 1)[0])
        assert r.status_code == 200 and r.json()['predictions'][0]['prediction'] in ('Adelie', 'Chinstrap', 'Gentoo')
        ex = s.client.post('/v1/explain', json=_records(run, 1)[0])
        assert ex.status_code == 200, ex.text
    finally: s.stop()


def test_a_boolean_target_keeps_one_spelling_from_the_answer_to_the_monitor(tmp_path):
    "Gentoo or not, as true/false: the answer, a JSON `true` posted as feedback and the monitor's labels all agree."
    table = dataset_table('penguins').with_columns(gentoo=pl.col('species') == 'Gentoo').drop('species')
    table.write_csv(tmp_path/'gentoo.csv')
    r = mlsys('run', '-p', f"data={tmp_path/'gentoo.csv'}", '-p', 'target=gentoo', '-p', 'id_column=rownames', *SPEED,
              '--set', f"paths.home={tmp_path/'home'}")
    assert r.returncode == 0, r.stderr[-4000:]
    reg = Registry(tmp_path/'home'/'registry')
    assert reg.show('gentoo', 'production')['metrics']['task'] == 'binary'
    s = Served(tmp_path/'home', reg.root)
    try:
        for row in table.iter_rows(named=True):
            rec = {k: v for k, v in row.items() if k not in ('rownames', 'gentoo')}
            p = s.client.post('/v1/predict', json=rec).json()['predictions'][0]
            assert p['prediction'] in ('true', 'false'), p
            assert s.client.post('/v1/feedback',
                                 json={'request_id': p['request_id'], 'label': row['gentoo']}).status_code == 202
    finally: s.stop()
    m = mlsys('monitor', '--policy', 'off', '--set', f"paths.home={tmp_path/'home'}",
              env=os.environ | {'MLSYS_DRIFT_MIN_LABELS': '50', 'MLSYS_DRIFT_MIN_ROWS': '50'})
    d = json.loads(m.stdout)
    perf = json.loads((tmp_path/'home'/'monitor'/d['window']/'report.json').read_text())['performance']
    # both classes seen
    assert perf['labels'] == table.height and perf['value'] is not None and perf['value'] > 0.9, perf
