"`mlsys new`: a new project exports, passes its notebooks and its tests, and runs its pipeline, from the built wheel."
import json, os, subprocess, sys
from pathlib import Path
import pytest
from conftest import BIN, ROOT
from mlsys.config import sha256_file
from mlsys.example import example_table
from mlsys.project import new_project

FAST = dict(max_epochs=1, trials=0, n_boot=20, explain_rows=20, background_rows=10, mitigation='null',
            sensitive_columns='[female]')


def _env(bin_dir:Path) -> dict:
    "A user's environment: `bin_dir` first on PATH, no mlsys settings, no other virtual environment or PYTHONPATH."
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLSYS_', 'VIRTUAL_ENV', 'PYTHONPATH'))}
    return env | {'PATH': f"{bin_dir}:{env['PATH']}"}


def _ok(*args, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    "Run a command that must succeed; the completed process."
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _snapshot(root:Path) -> dict:
    "Every file under `root` with its sha256."
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob('*')) if p.is_file()}


def test_new_project_exports_and_passes_its_notebooks_and_tests(tmp_path):
    "A new project with this checkout's mlsys: nbdev-clean changes nothing; nbdev-export, nbdev-test, pytest pass."
    root, env = new_project('demo', tmp_path), _env(BIN)
    made = _snapshot(root)
    _ok(BIN/'nbdev-clean', cwd=root, env=env)
    assert _snapshot(root) == made                                     # the notebooks are as nbdev-clean leaves them
    _ok(BIN/'nbdev-export', cwd=root, env=env)
    assert 'def write_report' in (root/'demo'/'report.py').read_text()
    _ok(BIN/'nbdev-test', cwd=root, env=env)
    _ok(sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', cwd=root, env=env)


def test_new_project_from_the_wheel_runs_its_pipeline(wheel_venv, tmp_path):
    "From the installed wheel: `mlsys new demo`, its two README commands, nbdev-test and pytest, all succeed."
    env, work, data = _env(wheel_venv.bin), tmp_path/'work', tmp_path/'customers.csv'
    work.mkdir()
    r = _ok(wheel_venv.bin/'mlsys', 'new', 'demo', cwd=work, env=env)
    demo = work/'demo'
    assert r.stdout.strip().splitlines()[-1] == str(demo)
    again = subprocess.run([str(wheel_venv.bin/'mlsys'), 'new', 'demo'], cwd=work, env=env, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and 'not empty' in again.stderr, again.stderr

    _ok(wheel_venv.bin/'python', '-m', 'pip', 'install', '-q', '-c', ROOT/'constraints.txt', '-e', '.[dev]', cwd=demo,
        env=env, timeout=900)
    _ok(wheel_venv.bin/'nbdev-export', cwd=demo, env=env)
    _ok(wheel_venv.bin/'nbdev-test', cwd=demo, env=env)
    _ok(wheel_venv.bin/'python', '-m', 'pytest', '-q', '-p', 'no:cacheprovider', cwd=demo, env=env)

    example_table().sample(400, seed=0).write_csv(data)
    params = dict(data=data, target='churn', id_column='rownames') | FAST
    r = _ok(wheel_venv.bin/'mlsys', 'run', '--pipeline', 'pipeline.yml',
            *[a for k, v in params.items() for a in ('-p', f'{k}={v}')], cwd=demo, env=env, timeout=900)
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    assert run_dir.parent == demo/'.mlsys'/'runs'                        # settings.ini: the project's own home
    m = json.loads((run_dir/'report'/'manifest.json').read_text())
    assert m['status'] == 'succeeded'
    [rec] = [o for o in m['outputs'] if o['role'] == 'report']
    assert rec['sha256'] == sha256_file(run_dir/'report'/'report.md')
    assert any(i['path'] == str(run_dir/'evaluate'/'metrics.json') for i in m['inputs'])
    ev = json.loads((run_dir/'evaluate'/'metrics.json').read_text())
    assert f"{ev['n']['test']} test rows" in (run_dir/'report'/'report.md').read_text()   # the run's, not the sample
    assert (demo/'.mlsys'/'registry').is_dir() and not list(run_dir.rglob('.mlsys'))      # one home: the project's
