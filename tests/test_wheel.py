"The built wheel: its dependencies split into the core and extras; installed with `all`, it runs the ingest job."
import json, os, re, subprocess, zipfile
from pathlib import Path
from conftest import mlsys


def test_wheel_installs_and_runs_ingest_outside_the_repo(tmp_path, wheel_venv):
    names = zipfile.ZipFile(wheel_venv.wheel).namelist()
    assert {'mlsys/nbs/02_data.ipynb', 'mlsys/nbs/12_register.ipynb', 'mlsys/settings.ini'} <= set(names)
    env_dir, py = wheel_venv.venv, wheel_venv.bin/'python'
    work = tmp_path/'elsewhere'; work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('MLSYS_', 'VIRTUAL_ENV', 'PYTHONPATH'))}
    env |= {'MLSYS_PATHS_HOME': str(tmp_path/'home'), 'PATH': f"{env_dir/'bin'}:{env['PATH']}"}
    r = mlsys('run', '--stages', 'ingest', '--example', cwd=work, env=env, exe=env_dir/'bin'/'mlsys')
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    m = json.loads((run_dir/'ingest'/'manifest.json').read_text())
    assert m['status'] == 'succeeded' and m['rows']['accepted'] == 7043
    assert str(env_dir) in subprocess.run([str(py), '-c', 'import mlsys; print(mlsys.__file__)'],
                                          capture_output=True, text=True, cwd=work).stdout
    assert not list(work.iterdir())                                         # nothing written into the working dir
    check = subprocess.run([str(py), '-m', 'pip', 'check'], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout                              # the wheel's own dependencies hold


def test_wheel_core_dependencies_leave_out_training_jobs_and_evaluation(wheel):
    "The core requirements name no torch, Lightning, papermill or jupyter; each heavy library comes with an extra."
    meta = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist()
                                            if n.endswith('.dist-info/METADATA'))).decode()
    reqs = re.findall(r'^Requires-Dist: (.+)$', meta, re.M)
    name = lambda r: re.match(r'[A-Za-z0-9_.-]+', r).group(0).lower()
    core = {name(r) for r in reqs if 'extra ==' not in r}
    extra = lambda e: {name(r) for r in reqs if f'extra == "{e}"' in r}
    assert {'onnxruntime', 'onnx', 'polars', 'starlette', 'uvicorn', 'orjson', 'prometheus-client', 'scipy'} <= core
    assert not core & {'torch', 'lightning', 'wandb', 'optuna', 'papermill', 'nbformat', 'ipykernel', 'shap',
                       'captum', 'evidently', 'fairlearn', 'scikit-learn', 'matplotlib', 'pandas', 'jupyterlab'}
    assert {'torch', 'lightning', 'onnxscript'} <= extra('train')
    assert {'papermill', 'ipykernel', 'nbconvert'} <= extra('jobs')
    assert {'shap', 'captum', 'evidently', 'fairlearn', 'mlsys'} <= extra('evaluate')
    assert 'mlsys' in extra('all') and {'mlsys', 'nbdev', 'jupyterlab', 'pytest'} <= extra('dev')


def test_installed_size_of_all(wheel_venv):
    "The size of the `all` install, printed for the record (the core's is printed by tests/test_core_install.py)."
    site = next(wheel_venv.venv.glob('lib/python3*/site-packages'))
    mb = sum(p.stat().st_size for p in site.rglob('*') if p.is_file() and not p.is_symlink()) / 2**20
    print(f"all install (with nbdev and pytest): {mb:.0f} MB in site-packages")
    assert (site/'torch').is_dir() and (site/'papermill').is_dir()
