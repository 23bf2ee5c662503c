"""Batch scoring speed: `mlsys score` (parquet in, parquet out, validated, quarantine kept) beside onnxruntime alone.

The model comes from a small example run (ingest, features, one epoch of training, export), or `--model`. The file
is the example table repeated to `--rows` rows with fresh ids, one row in 1,000 broken (quarantined). In one run,
taking turns, `--repeats` times each after one warm-up round:

- `score_file`: the whole job, from the parquet file to the written predictions and quarantine parts;
- onnxruntime alone: `session.run` of the model file over the accepted rows' feeds (its raw columns), prepared in
  memory beforehand (typed, as arrays, in chunks of `--chunk-rows`), once with one intra-op thread and once with all
  of this machine's cores;
- onnxruntime alone on the model as `score_file` opens it (`LoadedModel(coded=True)`: text inputs as each column's
  distinct values and the rows' codes), its feeds prepared the same way.

The table gives median seconds, rows per second, each one's ratio to the faster onnxruntime on the model file (the
goal of issue 18: `score_file` at >= 0.85 of it) and to the faster onnxruntime on the coded model, and the CPU seconds
it used (all threads): the work done, whatever else the machine runs meanwhile. `--profile` adds where the time goes
when the steps run one after the other (read, validate, feeds, onnxruntime, output columns, write), summed over the
file's chunks. `--chunk-sweep 25000,50000,...` adds `score_file`'s time in chunks of each size, the sizes taking turns.
`--cold 50000,1000000` adds fresh processes (import included) scoring files of those sizes, the text plain and as
codes: the codes need `onnx`, whose import a fresh process pays once.

    python benchmarks/score.py [--rows 1000000] [--chunk-rows 50000] [--repeats 5] [--model M.onnx] [--profile]
                               [--chunk-sweep 25000,50000,100000] [--cold 50000,300000,1000000]
"""
import argparse, os, resource, shutil, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
import polars as pl
warnings.filterwarnings('ignore')
from mlsys.config import run_file, write_parquet_atomic
from mlsys.data import run_ingest, validate
from mlsys.example import example_run, example_table
from mlsys.export import run_export
from mlsys.features import run_features
from mlsys.runtime import LoadedModel, scoring_contract
from mlsys.score import _batches, score_file
from mlsys.train import run_train


def cpu_seconds() -> float:
    "This process's CPU time so far, all threads, user and system."
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def batch(path:Path, rows:int) -> int:
    "The example table, target dropped, repeated to `rows` rows with fresh ids, one in 1,000 broken; its row count."
    df = example_table().drop('churn').with_columns(pl.col('tenure').cast(pl.String))
    df = pl.concat([df] * (rows // df.height + 1)).head(rows)
    df = df.with_columns(pl.when(pl.int_range(pl.len()) % 1000 == 7).then(pl.lit('soon')).otherwise('tenure')
                         .alias('tenure'), rownames=pl.int_range(pl.len()))
    df.write_parquet(path)
    return df.height


def prepared(data:Path, m:LoadedModel, chunk_rows:int) -> list[dict]:
    "The accepted rows' feeds for `m`'s session, in chunks: what onnxruntime alone is given."
    acc = validate(pl.read_parquet(data), scoring_contract(m), max_quarantine_fraction=1.0).accepted
    return [m.feeds(acc.slice(i, chunk_rows)) for i in range(0, acc.height, chunk_rows)]


def profile(data:Path, blob:bytes, chunk_rows:int, tmp:Path):
    "Seconds per step, summed over the file's chunks, the steps run one after the other."
    m = LoadedModel(blob, 'bench', threads=1, coded=True)   # as score_file opens it
    c, t, offset = scoring_contract(m), dict.fromkeys(['read', 'validate', 'feeds', 'onnxruntime', 'columns',
                                                          'write'], 0.0), 0
    def timed(step, f):
        t0 = time.perf_counter(); r = f(); t[step] += time.perf_counter() - t0; return r
    it = iter(_batches(data, chunk_rows))
    for i in range(10**9):
        if (chunk := timed('read', lambda: next(it, None))) is None: break
        res = timed('validate', lambda: validate(chunk, c, max_quarantine_fraction=1.0))
        feeds = timed('feeds', lambda: m.feeds(res.accepted))
        out = timed('onnxruntime', lambda: m.predict(feeds).astype(np.float64))
        preds = timed('columns', lambda: res.accepted.select('_row').with_columns(
            *[pl.Series(k, v) for k, v in m.frame(out).items()], pl.col('_row') + offset))
        timed('write', lambda: (write_parquet_atomic(preds, tmp/f'p-{i}.parquet'),
                                write_parquet_atomic(res.quarantine, tmp/f'q-{i}.parquet')))
        offset += chunk.height
    return t


def sweep(data:Path, model:str, sizes:list[int], repeats:int, tmp:Path) -> dict[int, float]:
    "Median seconds of `score_file` in chunks of each size, the sizes taking turns, after one warm-up round."
    times = {s: [] for s in sizes}
    for i in range(repeats + 1):
        for s in sizes:
            t0 = time.perf_counter(); score_file(data, tmp/f'sweep-{s}-{i}', model=model, chunk_rows=s)
            if i: times[s].append(time.perf_counter() - t0)
            shutil.rmtree(tmp/f'sweep-{s}-{i}')
    return {s: statistics.median(ts) for s, ts in times.items()}


COLD = """
import sys, time
t0 = time.perf_counter()
from mlsys.score import score_file
score_file(sys.argv[1], sys.argv[2], model=sys.argv[3], coded=sys.argv[4] == 'coded')
print(time.perf_counter() - t0)
"""

def cold(model:str, sizes:list[int], repeats:int, tmp:Path) -> dict[int, dict[str, float]]:
    "Median seconds of a fresh process importing `mlsys.score` and scoring a file, text plain or as codes, by size."
    out = {}
    for n in sizes:
        data, times = tmp/f'cold-{n}.parquet', {'plain': [], 'coded': []}
        batch(data, n)
        for i in range(repeats + 1):
            for how in times:
                args = [str(data), str(tmp/f'cold-out-{n}-{how}-{i}'), model, how]
                r = subprocess.run([sys.executable, '-c', COLD, *args], capture_output=True, text=True, check=True)
                if i: times[how].append(float(r.stdout.split()[-1]))
        out[n] = {k: statistics.median(v) for k, v in times.items()}
    return out


def main(rows, chunk_rows, repeats, model, show_profile, chunk_sweep, cold_sizes):
    tmp = Path(tempfile.mkdtemp())
    if model is None:
        run_dir = example_run(run_ingest, run_features, run_train, run_export, run_dir=tmp/'run', max_epochs=1,
                              trials=0, search={}, repeats=10, settings={'tracking.mode': 'disabled'})
        model = str(run_file(run_dir, 'model'))
    blob, data = Path(model).read_bytes(), tmp/'batch.parquet'
    n = batch(data, rows)
    cores = os.cpu_count() or 1
    sessions = {f'onnxruntime alone{", coded" * coded}, {k} thread{"s" * (k > 1)}':
                LoadedModel(blob, 'bench', threads=k, coded=coded) for coded in (False, True)
                for k in dict.fromkeys([1, cores])}
    feeds = {coded: prepared(data, LoadedModel(blob, 'bench', coded=coded), chunk_rows) for coded in (False, True)}
    accepted = sum(len(f[next(iter(f))]) for f in feeds[False])
    def ort(m):
        return lambda: [m.predict(f) for f in feeds[bool(m.coded)]]
    def scorer(i):
        return lambda: score_file(data, tmp/f'out-{i}', model=model, chunk_rows=chunk_rows)
    times = {'mlsys score (score_file)': []} | {k: [] for k in sessions}
    cpu = {k: [] for k in times}
    for i in range(repeats + 1):                    # the first round warms everything up and is not counted
        for name in times:
            run = scorer(i) if name.startswith('mlsys') else ort(sessions[name])
            c0, t0 = cpu_seconds(), time.perf_counter()
            res = run()
            dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
            if name.startswith('mlsys'):
                assert (res['scored'], res['quarantined']) == (accepted, n - accepted), res
                shutil.rmtree(tmp/f'out-{i}')
            if i: times[name].append(dt); cpu[name].append(dc)
    rate = {k: (n if k.startswith('mlsys') else accepted) / statistics.median(ts) for k, ts in times.items()}
    best = max(v for k, v in rate.items() if k.startswith('onnxruntime') and 'coded' not in k)
    best_coded = max(v for k, v in rate.items() if 'coded' in k)
    print(f"{n:,} rows ({n - accepted:,} quarantined), chunks of {chunk_rows:,}, {cores} CPUs here; "
          f"medians of {repeats}\n")
    print(f"{'':<44} {'seconds':>8} {'rows/s':>10} {'vs onnxruntime':>15} {'vs coded':>9} {'CPU seconds':>12}")
    for k, ts in times.items():
        print(f"{k:<44} {statistics.median(ts):8.2f} {rate[k]:10,.0f} {rate[k] / best:15.2f} "
              f"{rate[k] / best_coded:9.2f} {statistics.median(cpu[k]):12.2f}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}: other processes' CPU use slows the scorer, "
          "which needs two cores, more than onnxruntime alone on one")
    if show_profile:
        t = profile(data, blob, chunk_rows, tmp)
        print(f"\none after the other (1 thread for onnxruntime), seconds per step over the file "
              f"({sum(t.values()):.2f} s in all):")
        print('  '.join(f"{k} {v:.2f}" for k, v in t.items()))
    if chunk_sweep:
        sizes = [int(x) for x in chunk_sweep.split(',')]
        print(f"\nscore_file by chunk size (seconds, medians of {repeats}): " +
              '  '.join(f"{s:,}: {t:.2f}" for s, t in sweep(data, model, sizes, repeats, tmp).items()))
    if cold_sizes:
        print("\na fresh process importing mlsys.score and scoring a file (seconds, medians of "
              f"{repeats}): the text plain / as codes (which imports onnx)")
        for n, t in cold(model, [int(x) for x in cold_sizes.split(',')], repeats, tmp).items():
            print(f"{n:>12,} rows: {t['plain']:.2f} / {t['coded']:.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rows', type=int, default=1_000_000)
    p.add_argument('--chunk-rows', type=int, default=50_000)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--model', default=None, help='an .onnx file; default: an example run exports one')
    p.add_argument('--profile', action='store_true', help='also time each step, run one after the other')
    p.add_argument('--chunk-sweep', default='', help='also time score_file in chunks of each size: 25000,50000')
    p.add_argument('--cold', default='', help='also time fresh processes scoring files of these sizes: 50000,1000000')
    a = p.parse_args()
    main(a.rows, a.chunk_rows, a.repeats, a.model, a.profile, a.chunk_sweep, a.cold)
