"""The example pipeline's wall time, from `mlsys run --example` to the printed run directory, and each stage's time
to its first cell and its total (papermill's clock, which starts once the kernel is up), from the executed notebooks;
what the notebooks do not account for (kernel starts, the runner) is the rest of the wall time.

    .venv/bin/python benchmarks/pipeline.py [--repeats 3] [--tracking offline]

Each repeat runs in a fresh home (nothing reused); medians are printed. `--tracking` is the wandb mode: `offline`,
the shipped default and so what a user's run pays (wandb's first run in a process imports about 1.5 s of it), or
`disabled`.
"""
import argparse, datetime as dt, json, statistics, subprocess, sys, tempfile, time
from pathlib import Path

BIN = Path(sys.executable).parent/'mlsys'


def _t(s:str) -> dt.datetime: return dt.datetime.fromisoformat(s.replace('Z', '+00:00'))


def stage_times(nb_path:Path) -> dict:
    "A stage's seconds from the notebook's start to its first cell, and in all, from papermill's metadata."
    nb = json.loads(nb_path.read_text())
    md = nb['metadata']['papermill']
    starts = [_t(c['metadata']['papermill']['start_time']) for c in nb['cells']
              if c['cell_type'] == 'code' and (c['metadata'].get('papermill') or {}).get('start_time')]
    start, end = _t(md['start_time']), _t(md['end_time'])
    return dict(to_first_cell=(min(starts) - start).total_seconds(), total=(end - start).total_seconds())


def one_run(tracking:str) -> dict:
    "One `mlsys run --example` in a fresh home, wandb in mode `tracking`: the wall time and each stage's times."
    home = Path(tempfile.mkdtemp(prefix='mlsys-bench-'))
    t0 = time.perf_counter()
    r = subprocess.run([str(BIN), 'run', '--example', '--set', f'paths.home={home}',
                        '--set', f'tracking.mode={tracking}'], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode: sys.exit(r.stderr[-3000:])
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    stages = {d.name: stage_times(d/'notebook.ipynb') for d in sorted(run_dir.iterdir())
              if (d/'notebook.ipynb').exists()}
    return dict(wall=wall, stages=stages)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--tracking', default='offline', choices=('offline', 'disabled'))
    a = ap.parse_args()
    runs = [one_run(a.tracking) for _ in range(a.repeats)]
    med = lambda xs: statistics.median(xs)
    wall = med([r['wall'] for r in runs])
    names = list(runs[0]['stages'])
    print(f"example pipeline, {len(runs)} runs, wandb {a.tracking}, medians: {wall:.1f} s from `mlsys run` to the run "
          f"directory")
    print(f"{'stage':<10} {'to first cell':>14} {'total':>8}")
    firsts = 0.0
    for s in names:
        f, t = med([r['stages'][s]['to_first_cell'] for r in runs]), med([r['stages'][s]['total'] for r in runs])
        firsts += f
        print(f"{s:<10} {f:>12.1f} s {t:>6.1f} s")
    totals = sum(med([r['stages'][s]['total'] for r in runs]) for s in names)
    print(f"before first cells: {firsts:.1f} s; outside the notebooks (kernel starts, the runner): "
          f"{wall - totals:.1f} s")
    print(f"goal: the whole run <= 90 s; this run is {wall / 90:.2f} of it")


if __name__ == '__main__': main()
