"The built wheel, installed into a new virtual environment, runs the ingest job outside the repository."
import json, os, subprocess, sys, venv, zipfile
from pathlib import Path
from conftest import ROOT, mlsys


def test_wheel_installs_and_runs_ingest_outside_the_repo(tmp_path):
    dist = tmp_path/'dist'
    subprocess.run([sys.executable, '-m', 'build', '--wheel', '--outdir', str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=600)
    wheel = next(dist.glob('mlsys-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    assert {'mlsys/nbs/02_data.ipynb', 'mlsys/nbs/12_register.ipynb', 'mlsys/settings.ini'} <= set(names)

    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir/'bin'/'python'
    r = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '-c', str(ROOT/'constraints.txt'), str(wheel)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]

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
