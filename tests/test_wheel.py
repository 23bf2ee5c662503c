"The built wheel, installed into a new virtual environment, runs the ingest job outside the repository."
import json, os, subprocess, zipfile
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
