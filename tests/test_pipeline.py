"The job runner end to end, through real papermill kernels: `mlsys run`, manifests, failures, resume, precedence."
import json
from pathlib import Path
import nbformat
import polars as pl
import pytest
from conftest import mlsys
from mlsys import pipeline
from mlsys.config import sha256_file
from mlsys.data import infer_contract
from mlsys.example import example_table
from mlsys.registry import Registry


def _manifest(run_dir, stage='ingest'): return json.loads((Path(run_dir)/stage/'manifest.json').read_text())


def _bad_csv(path, n_bad):
    "The example table as CSV with `n_bad` rows whose tenure is not a number."
    df = example_table().with_columns(pl.col('tenure').cast(pl.String))
    df = df.with_columns(
        pl.when(pl.int_range(df.height) < n_bad).then(pl.lit('soon')).otherwise('tenure').alias('tenure'))
    df.write_csv(path)
    return path


@pytest.fixture(scope='module')
def contract(tmp_path_factory):
    "A contract inferred from the clean example table, saved as JSON."
    p = tmp_path_factory.mktemp('c')/'contract.json'
    infer_contract(example_table(), target='churn', id_column='rownames').save(p)
    return p


def test_run_writes_outputs_notebooks_and_manifest(tmp_path, monkeypatch):
    "The whole example pipeline, its home named only in a job config: everything lands there, nothing in ~/.mlsys."
    monkeypatch.delenv('MLSYS_PATHS_HOME', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path/'user'))                    # the default home, ~/.mlsys, lives here
    home, cfg = tmp_path/'home', tmp_path/'job.yml'
    cfg.write_text(f"settings: {{paths.home: '{home}'}}\n")
    r = mlsys('run', '--example', '--config', cfg, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    assert run_dir.parent == home/'runs' and (run_dir/'run.json').exists()
    assert str(run_dir) in r.stderr.splitlines()[0] and 'register: ran, succeeded' in r.stderr   # a run that talks
    assert not (tmp_path/'user'/'.mlsys').exists()                       # nothing under the default home
    assert (home/'registry'/'registry.sqlite').exists() and any((home/'tracking').rglob('*'))
    m = _manifest(run_dir)
    assert (m['stage'], m['status']) == ('ingest', 'succeeded')
    assert m['started'] <= m['ended'] and m['versions']['mlsys'] and m['error'] is None
    assert m['git_commit'] is None or len(m['git_commit']) == 40
    roles = {o['role']: o for o in m['outputs']}
    assert {'accepted', 'quarantine', 'violations', 'contract', 'notebook', 'notebook_html'} <= set(roles)
    assert roles['accepted']['rows'] == 7043 and roles['quarantine']['rows'] == 0
    for o in m['outputs']: assert sha256_file(o['path']) == o['sha256']
    nb = nbformat.read(run_dir/'ingest'/'notebook.ipynb', as_version=4)
    assert any('injected-parameters' in c.metadata.get('tags', []) for c in nb.cells)
    assert '7043 rows: 7043 accepted' in (run_dir/'ingest'/'notebook.html').read_text()
    f = _manifest(run_dir, 'features')                                    # the next stage read what ingest wrote
    assert f['status'] == 'succeeded' and f['contract_hash'] == m['contract_hash']
    assert {i['sha256'] for i in f['inputs']} == {roles['accepted']['sha256'], roles['contract']['sha256']}
    assert f['split']['counts']['train'] + f['split']['counts']['valid'] + f['split']['counts']['test'] == 7043
    t = _manifest(run_dir, 'train')                                       # and training read the features
    assert t['status'] == 'succeeded' and t['spec_hash'] == f['spec_hash']
    assert {o['role'] for o in t['outputs']} >= {'checkpoint', 'last_checkpoint', 'train_metrics', 'hparams',
                                                 'learning_curves'}
    assert set(t['metrics']['model']) == set(t['metrics']['baseline']) == {'valid', 'test'}
    e = _manifest(run_dir, 'evaluate')                                    # and evaluation read the best checkpoint
    assert e['status'] == 'succeeded'
    best = next(o for o in t['outputs'] if o['role'] == 'checkpoint')
    assert ({'role': 'checkpoint', 'sha256': best['sha256']}.items()
            <= next(i for i in e['inputs'] if i['role'] == 'checkpoint').items())
    ev = json.loads((run_dir/'evaluate'/'metrics.json').read_text())
    assert set(ev['fairness']) == {'female', 'senior_citizen', 'female & senior_citizen'}
    assert ev['lineage']['run_id'] == run_dir.name and ev['lineage']['feature_spec_sha256'] == f['spec_hash']
    assert ev['explanations']['additivity_max_error'] < 0.05 and ev['explanations']['rows'] > 0
    card = (run_dir/'evaluate'/'model_card.html').read_text()
    assert 'Intended use' in card and card.count('data:image/png;base64,') == 4
    x = _manifest(run_dir, 'export')                                      # the export joined features and network
    assert x['status'] == 'succeeded' and x['parity']['passed'] and x['contract_hash'] == m['contract_hash']
    model = next(o for o in x['outputs'] if o['role'] == 'model')
    # and the run was registered, through the gates
    d = json.loads((run_dir/'register'/'decision.json').read_text())
    reg = Registry(home/'registry')
    v = reg.show('churn', d['to_version'])
    assert v['run_id'] == run_dir.name and v['artifacts']['model']['sha256'] == model['sha256']
    assert (v['lineage']['feature_spec_sha256'] == f['spec_hash']
            and v['metrics']['roc_auc'] == ev['metrics']['model']['roc_auc']['value'])
    assert {g['gate'] for g in d['gates']} == {'parity', 'fairness', 'latency'}   # no incumbent: absolute gates only
    assert d['promoted'] == all(g['passed'] for g in d['gates'])
    assert reg.history('churn')[-1]['action'] == ('promote' if d['promoted'] else 'held')


def test_failing_stage_stops_with_one_line_and_resume_finishes(home, tmp_path, contract, monkeypatch):
    "Two stages: the first fails, the second does not run; resume keeps the run and finishes both."
    monkeypatch.setattr(pipeline, 'STAGES', {'ingest': '02_data.ipynb', 'again': '02_data.ipynb'})
    data = _bad_csv(tmp_path/'batch.csv', n_bad=1000)
    with pytest.raises(pipeline.StageFailed) as e:
        pipeline.run_pipeline({'data': str(data), 'contract': str(contract), 'target': 'churn'})
    msg = str(e.value)
    assert ('\n' not in msg and "stage 'ingest' failed in cell" in msg and 'DataError' in msg
            and 'above the limit' in msg)
    run_dir = next((home/'runs').iterdir())
    m = _manifest(run_dir)
    assert m['status'] == 'failed' and m['error'] == msg
    assert not (run_dir/'ingest'/'accepted.parquet').exists()           # a refused batch writes nothing
    assert not (run_dir/'again').exists()                                 # later stages did not run
    nb = nbformat.read(run_dir/'ingest'/'notebook.ipynb', as_version=4)
    assert any(o.get('ename') == 'DataError' for c in nb.cells for o in c.get('outputs', []))
    assert (run_dir/'ingest'/'notebook.html').exists()

    _bad_csv(data, n_bad=3)                                               # upstream fixes most of the batch
    assert pipeline.run_pipeline(resume=run_dir) == run_dir
    m = _manifest(run_dir)
    assert m['status'] == 'succeeded' and m['rows'] == dict(input=7043, accepted=7040, quarantined=3)
    first_end = _manifest(run_dir, 'again')['ended']
    assert _manifest(run_dir, 'again')['status'] == 'succeeded'
    pipeline.run_pipeline(resume=run_dir)                                 # nothing left to do
    assert _manifest(run_dir, 'again')['ended'] == first_end


def test_cli_failure_exit_status_and_message(home, tmp_path, contract):
    r = mlsys('run', '-p', f'data={_bad_csv(tmp_path/"b.csv", 1000)}', '-p', f'contract={contract}',
              '-p', 'target=churn')
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]                               # after the progress lines, one line says why
    assert last.startswith("mlsys: stage 'ingest' failed in cell") and 'DataError' in last


def test_precedence_settings_env_flags_and_config(home, tmp_path, contract, monkeypatch):
    "A batch with 3 bad rows of 7043: refused or accepted by the quarantine limit from env, config and --set."
    data = _bad_csv(tmp_path/'b.csv', 3)
    base = ['run', '--stages', 'ingest', '-p', f'data={data}', '-p', f'contract={contract}']
    assert mlsys(*base).returncode == 0                                   # settings.ini: 5% allows 3 rows
    monkeypatch.setenv('MLSYS_DATA_MAX_QUARANTINE_FRACTION', '0')
    assert mlsys(*base).returncode == 1                                   # the environment overrides the file
    cfg = tmp_path/'job.yml'
    cfg.write_text("params: {target: churn, id_column: nope}\nstages: {ingest: {id_column: rownames}}\n"
                   "settings: {data.max_quarantine_fraction: 0.01}\n")
    r = mlsys(*base, '--config', cfg)                                     # the config overrides the environment
    assert r.returncode == 0, r.stderr
    m = _manifest(r.stdout.strip().splitlines()[-1])
    assert m['parameters']['id_column'] == 'rownames' and m['parameters']['target'] == 'churn'
    assert m['settings']['data']['max_quarantine_fraction'] == 0.01      # the stage got the resolved settings
    assert m['rows']['quarantined'] == 3
    assert mlsys(*base, '--config', cfg, '--set', 'data.max_quarantine_fraction=0').returncode == 1   # flags win
    r = mlsys(*base, '--config', cfg, '-p', 'id_column=customer', '--set', 'data.max_quarantine_fraction=0.5')
    assert r.returncode == 0, r.stderr                                    # -p overrides both config sections
    assert _manifest(r.stdout.strip().splitlines()[-1])['parameters']['id_column'] == 'customer'


def test_cli_rejects_unknown_names(home):
    for args, words in ((['--stages', 'ingest,train2'], 'unknown stages'), (['-p', 'targte=churn'], "['targte']"),
                        (['--set', 'data.nope=1'], 'unknown setting'), (['-p', 'novalue'], 'key=value')):
        r = mlsys('run', *args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
    assert not (home/'runs').exists() or not any((home/'runs').iterdir())


def test_csv_without_contract_types_columns_for_all_stages(home, tmp_path):
    "A contract inferred from a CSV has the CSV's types, so the features stage finds numbers to scale."
    data = tmp_path/'customers.csv'
    example_table().write_csv(data)
    run_dir = pipeline.run_pipeline({'data': str(data), 'target': 'churn', 'id_column': 'rownames', 'split': 'random'},
                                    stages=['ingest', 'features'])
    contract = json.loads((run_dir/'ingest'/'contract.json').read_text())
    assert contract['columns']['tenure']['dtype'] == 'int64' and contract['columns']['total_charges']['nullable']
    spec = json.loads((run_dir/'features'/'spec.json').read_text())['transforms']
    assert {t['column'] for t in spec if t['kind'] == 'numeric'} >= {'tenure', 'monthly_charges', 'total_charges'}
    assert _manifest(run_dir, 'features')['split']['method'] == 'random'
