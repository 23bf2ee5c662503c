"A pipeline's Airflow DAG run by a real Airflow 3 (`airflow dags test`, SQLite metadata) in its own virtualenv."
import json, os, subprocess
from pathlib import Path
import pytest
from conftest import ROOT, mlsys


@pytest.fixture(scope='session')
def airflow_bin():
    "The `bin` folder of Airflow's own virtual environment: `scripts/engines` makes it once; later runs reuse it."
    r = subprocess.run(['bash', str(ROOT/'scripts'/'engines'), 'airflow'], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return Path(r.stdout.strip().splitlines()[-1])/'bin'


def _airflow(bin, home, *args):
    "Run the `airflow` command with its home and DAG folder in `home`, no example DAGs; the completed process."
    env = os.environ | dict(AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(home/'dags'),
                            AIRFLOW__CORE__LOAD_EXAMPLES='False')
    return subprocess.run([str(bin/'airflow'), *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


def _same_paths(value, run_dir):
    "A manifest value with its run directory's path written as RUN (two runs write the same things in two folders)."
    return json.loads(json.dumps(value, default=str).replace(str(run_dir), 'RUN'))


def test_dag_runs_the_pipeline_into_one_run_directory_like_mlsys_run(home, tmp_path, airflow_bin):
    "`airflow dags test` runs each stage as a task in Airflow's run's directory; `mlsys run` writes the same manifests."
    pipe, af = tmp_path/'pipeline.yml', tmp_path/'airflow'
    pipe.write_text('stages: [ingest, {name: features, upstream: [ingest]}]\n')
    flags = ['--example', '--set', 'tracking.mode=disabled']
    r = mlsys('airflow', 'dag', pipe, '--out', af/'dags', '--dag-id', 'churn', '--retries', '0', *flags, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == af/'dags'/'churn.py'
    assert _airflow(airflow_bin, af, 'db', 'migrate').returncode == 0
    r = _airflow(airflow_bin, af, 'dags', 'test', 'churn')
    assert r.returncode == 0 and 'state=success' in r.stdout + r.stderr, (r.stdout + r.stderr)[-5000:]
    run_dir, = (home/'runs').glob('airflow-churn-manual__*')          # Airflow's run id names the one run directory
    manifests = {s: json.loads((run_dir/s/'manifest.json').read_text()) for s in ('ingest', 'features')}
    assert all(m['status'] == 'succeeded' and m['ran'] for m in manifests.values())
    assert manifests['ingest']['ended'] <= manifests['features']['started']              # the edge held
    r = mlsys('run', '--pipeline', pipe, '--force', 'all', *flags, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ref = Path(r.stdout.strip().splitlines()[-1])
    for s, m in manifests.items():
        want = json.loads((ref/s/'manifest.json').read_text())
        assert set(m) == set(want) and m['cache_key'] == want['cache_key']              # same job, inputs, settings
        assert _same_paths(m['parameters'], run_dir) == _same_paths(want['parameters'], ref)
        roles = lambda m: sorted((o['role'], o.get('rows')) for o in m['outputs'])
        assert roles(m) == roles(want) and len(m['inputs']) == len(want['inputs'])
    plan, want = (json.loads((d/'run.json').read_text()) for d in (run_dir, ref))
    assert set(plan) == set(want) and plan['stages'] == want['stages']
    assert _same_paths(plan['plan'], run_dir) == _same_paths(want['plan'], ref)
