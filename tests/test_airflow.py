"A pipeline's Airflow DAG run by a real Airflow 3 (`airflow dags test`, SQLite metadata) in its own virtualenv."
import json, os, shlex, subprocess
from pathlib import Path
import pytest
from conftest import BIN, ROOT, mlsys


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


def test_airflow_reads_the_dag_with_its_tasks_edges_retries_and_schedule(tmp_path, airflow_bin):
    "The built-in pipeline's DAG as Airflow's DagBag loads it: a task per stage, each after all before it, the flags."
    r = mlsys('airflow', 'dag', '--out', tmp_path/'dags', '--retries', 3, '--retry-delay', 10, '--schedule', '@daily',
              '-p', 'target=churn', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    probe = """
import json, sys, warnings
warnings.filterwarnings('ignore')
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
dag = bag.dags['mlsys_pipeline']          # as parsed (get_dag would ask the metadata database)
print(json.dumps(dict(errors=bag.import_errors, schedule=str(dag.schedule), tasks=[
    dict(id=t.task_id, up=sorted(t.upstream_task_ids), retries=t.retries, delay=t.retry_delay.total_seconds(),
         command=t.bash_command, cwd=t.cwd) for t in dag.tasks])))
"""
    env = os.environ | dict(AIRFLOW_HOME=str(tmp_path/'airflow'), AIRFLOW__CORE__LOAD_EXAMPLES='False')
    r = subprocess.run([str(airflow_bin/'python'), '-c', probe, str(tmp_path/'dags')], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    stages = ['ingest', 'features', 'train', 'evaluate', 'export', 'register']
    assert got['errors'] == {} and got['schedule'] == '@daily' and [t['id'] for t in got['tasks']] == stages
    for i, t in enumerate(got['tasks']):
        assert t['up'] == sorted(stages[:i]) and (t['retries'], t['delay'], t['cwd']) == (3, 10, str(tmp_path))
        assert shlex.split(t['command'])[:4] == [str(BIN/'mlsys'), 'airflow', 'stage', t['id']]   # this install's
        assert '-p target=churn' in t['command'] and '--run-id "$MLSYS_AIRFLOW_RUN_ID"' in t['command']


def test_a_failed_task_is_retried_by_airflow_into_the_same_run_directory(home, tmp_path, airflow_bin):
    "A stage of the user's own that fails on its first try: Airflow retries it, and the stage succeeds in place."
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("marker = None\nout = None", metadata={'tags': ['parameters']}),
        nbformat.v4.new_code_cell("#| job\nfrom pathlib import Path\nif not Path(marker).exists():\n"
                                  "    Path(marker).write_text('tried')\n"
                                  "    raise RuntimeError('the first try fails')\n"
                                  "(Path(out)/'done.txt').write_text('ok')")])
    nbformat.write(nb, tmp_path/'flaky.ipynb')
    (tmp_path/'flaky.yml').write_text('stages: [{name: flaky, notebook: flaky.ipynb}]\n')
    af = tmp_path/'airflow'
    r = mlsys('airflow', 'dag', tmp_path/'flaky.yml', '--out', af/'dags', '--retries', 1, '--retry-delay', 1,
              '-p', f'marker={tmp_path/"marker"}', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _airflow(airflow_bin, af, 'db', 'migrate').returncode == 0
    r = _airflow(airflow_bin, af, 'dags', 'test', 'mlsys_flaky')
    out = r.stdout + r.stderr
    assert r.returncode == 0 and 'state=success' in out and 'the first try fails' in out, out[-5000:]
    run_dir, = (home/'runs').glob('airflow-mlsys_flaky-manual__*')
    m = json.loads((run_dir/'flaky'/'manifest.json').read_text())
    assert m['status'] == 'succeeded' and m['error'] is None and (run_dir/'flaky'/'done.txt').read_text() == 'ok'
