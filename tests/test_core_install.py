"The core install (`pip install mlsys`, no extras): no torch; it serves and scores a model the full install registered."
import json, os, subprocess
from pathlib import Path
import polars as pl
import pytest
from conftest import Served, mlsys, new_venv
from mlsys.example import example_table
from mlsys.monitor import reference_artifacts
from mlsys.registry import Registry

HEAVY = ('torch', 'lightning', 'papermill', 'nbformat', 'wandb', 'shap', 'evidently', 'sklearn', 'jupyter_client')


@pytest.fixture(scope='module')
def core(tmp_path_factory, wheel):
    "A new virtual environment with the mlsys wheel and its core dependencies only."
    return new_venv(tmp_path_factory.mktemp('core')/'venv', wheel)


def _env(core, home) -> dict:
    "A user's environment for the core venv: its bin first on PATH, no other venv, no PYTHONPATH, no mlsys settings."
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLSYS_', 'VIRTUAL_ENV', 'PYTHONPATH'))}
    return env | {'PATH': f"{core.bin}:{env['PATH']}", 'MLSYS_PATHS_HOME': str(home),
                  'MLSYS_TRACKING_MODE': 'disabled'}


@pytest.fixture(scope='module')
def registry(tmp_path_factory, example_model):
    "A registry the full install (this process) made: the example's model and drift reference, in production."
    d, t = tmp_path_factory.mktemp('core-registry'), example_table()
    model = example_model/'export'/'model.onnx'
    arts = reference_artifacts(t.sample(2000, seed=0), model.read_bytes(), d/'reference')
    reg = Registry(d/'registry')
    reg.register('churn', {'model': model} | arts, {}, dict(roc_auc=0.84))
    reg.promote('churn', 1, force=True, reason='test')
    return reg


def _size_mb(venv:Path) -> float:
    "Megabytes under the venv's site-packages."
    site = next(venv.glob('lib/python3*/site-packages'))
    return sum(p.stat().st_size for p in site.rglob('*') if p.is_file() and not p.is_symlink()) / 2**20


def test_core_has_no_torch_and_says_which_extra_a_command_needs(core, tmp_path):
    "torch, Lightning, papermill, jupyter... are absent; commands that need an extra name it in one line, status 2."
    env = _env(core, tmp_path/'home')
    probe = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    r = subprocess.run([str(core.bin/'python'), '-c', probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == '[]', (r.stdout, r.stderr)
    r = subprocess.run([str(core.bin/'python'), '-c', 'import torch'], env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "No module named 'torch'" in r.stderr
    for args, extra in ((['run', '--example'], 'jobs'), (['stages'], 'jobs'), (['new', 'demo'], 'jobs')):
        r = mlsys(*args, cwd=tmp_path, env=env, exe=core.bin/'mlsys')
        assert r.returncode == 2 and r.stderr.count('\n') == 1, (args, r.stderr)
        assert f"mlsys {args[0]} needs the '{extra}' extra" in r.stderr and f'pip install "mlsys[{extra}]"' in r.stderr
    assert not (tmp_path/'demo').exists()
    print(f"core install: {_size_mb(core.venv):.0f} MB in site-packages")


def test_core_serves_and_scores_a_model_the_full_install_registered(core, registry, tmp_path):
    "`mlsys serve` from the core venv answers /v1/predict; `mlsys score` scores a file, bad rows quarantined."
    env, t = _env(core, tmp_path/'home'), example_table()
    records = t.drop('churn').head(200)
    s = Served(tmp_path/'home', registry.root, exe=core.bin/'mlsys', env={'PATH': env['PATH']})
    try:
        r = s.client.post('/v1/predict', json=records.row(0, named=True))
        assert r.status_code == 200, r.text
        assert r.json()['model_version'] == 'churn:1', r.json()
    finally: s.stop()
    data = tmp_path/'batch.csv'
    bad = pl.when(pl.int_range(pl.len()) == 7).then(-5).otherwise(pl.col('tenure'))     # one row breaks the contract
    records.with_columns(tenure=bad).write_csv(data)
    r = mlsys('score', '--data', data, '--out', tmp_path/'scored', '--model', 'production', '--model-name', 'churn',
              '--registry', registry.root, cwd=tmp_path, env=env, exe=core.bin/'mlsys')
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)
    assert counts['scored'] + counts['quarantined'] == 200 and counts['quarantined'] >= 1, counts
    preds = pl.read_parquet(tmp_path/'scored'/'predictions')
    assert preds.height == counts['scored'] and pl.read_parquet(tmp_path/'scored'/'quarantine').height >= 1


def test_core_monitors_a_batch(core, registry, tmp_path):
    "`mlsys monitor` from the core venv judges a batch against the registered reference (no evidently needed)."
    env, t = _env(core, tmp_path/'home'), example_table()
    t.sample(1000, seed=1).write_parquet(tmp_path/'ok.parquet')
    r = mlsys('monitor', '--data', tmp_path/'ok.parquet', '--model', '1', '--model-name', 'churn', '--registry',
              registry.root, '--policy', 'alert', cwd=tmp_path, env=env, exe=core.bin/'mlsys')
    assert r.returncode in (0, 1), r.stderr
    d = json.loads(r.stdout)
    assert d['model_version'] == 'churn:1' and d['rows'] == 1000 and d['status'] in ('ok', 'drift')


def test_jobs_extra_runs_ingest_and_names_the_train_extra_before_the_rest_starts(tmp_path, wheel):
    "`mlsys[jobs]` alone: the ingest stage runs; the whole pipeline stops before its first stage, naming `train`."
    jobs = new_venv(tmp_path/'jobs-venv', f'{wheel}[jobs]')
    env = _env(jobs, tmp_path/'home')
    r = mlsys('run', '--example', '--stages', 'ingest', cwd=tmp_path, env=env, exe=jobs.bin/'mlsys')
    assert r.returncode == 0, r.stderr[-3000:]
    r = mlsys('run', '--example', cwd=tmp_path, env=env, exe=jobs.bin/'mlsys')
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert "mlsys run needs the 'train' extra" in r.stderr and 'pip install "mlsys[train]"' in r.stderr
    assert len(list((tmp_path/'home'/'runs').iterdir())) == 1                  # no run directory for the refused run
