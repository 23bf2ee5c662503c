"""Batch scoring speed: `mlsys score --engine ray` (Ray Data over partitions) beside the local scorer, on one file.

The model comes from a small example run (ingest, features, one epoch of training, export). The file is the example
table repeated to `--rows` rows, one row in 1,000 broken (quarantined). Both engines score the same file with the
same `--chunk-rows` (a chunk of the local scorer is a partition of Ray's), `--repeats` times each, alternating; the
table gives the median wall time, rows per second and the ratio to the local scorer. Ray is started once, before
the timed runs, with `--cpus` CPUs (default: all of this machine's); its start-up time is reported on its own line.
The local scorer gives onnxruntime all the machine's cores in one process; Ray runs one single-threaded actor per CPU.

    python benchmarks/score_ray.py [--rows 1000000] [--chunk-rows 100000] [--repeats 3] [--cpus N]
"""
import argparse, os, shutil, statistics, sys, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import ray
from mlsys.config import run_file
from mlsys.data import run_ingest
from mlsys.distributed import score_file_ray
from mlsys.example import example_run
from mlsys.export import run_export
from mlsys.features import run_features
from mlsys.score import score_file
from mlsys.train import run_train
sys.path.insert(0, str(Path(__file__).parent))
from score import batch   # the same batch file as the local scorer's benchmark


def main(rows, chunk_rows, repeats, cpus):
    tmp = Path(tempfile.mkdtemp())
    run_dir = example_run(run_ingest, run_features, run_train, run_export, run_dir=tmp/'run', max_epochs=1, trials=0,
                          search={}, repeats=10, settings={'tracking.mode': 'disabled'})
    model, data = str(run_file(run_dir, 'model')), tmp/'batch.parquet'
    n = batch(data, rows)
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level='ERROR')
    startup = time.perf_counter() - t0
    engines = {'local (polars chunks + onnxruntime)': lambda out: score_file(data, out, model=model,
                                                                              chunk_rows=chunk_rows),
               f'ray (Ray Data, {int(ray.cluster_resources()["CPU"])} actors)': lambda out: score_file_ray(
                   data, out, model=model, chunk_rows=chunk_rows)}
    times, counts = {k: [] for k in engines}, {}
    for i in range(repeats + 1):                    # the first round warms both up and is not counted
        for name, run in engines.items():
            out = tmp/f'out-{i}'
            t = time.perf_counter(); res = run(out); dt = time.perf_counter() - t
            counts[name] = (res['scored'], res['quarantined'])
            if i: times[name].append(dt)
            shutil.rmtree(out)
    assert len(set(counts.values())) == 1, counts    # both engines scored and quarantined the same rows
    base = statistics.median(next(iter(times.values())))
    print(f"{n:,} rows ({counts[name][1]:,} quarantined), chunks/partitions of {chunk_rows:,}, "
          f"{os.cpu_count()} CPUs here; medians of {repeats}\n")
    print(f"{'engine':<40} {'seconds':>8} {'rows/s':>12} {'vs local':>9}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:<40} {m:8.2f} {n / m:12,.0f} {base / m:8.2f}x")
    print(f"\nray.init (not in the times above): {startup:.1f} s")
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--rows', type=int, default=1_000_000)
    p.add_argument('--chunk-rows', type=int, default=100_000)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--cpus', type=int, default=None)
    a = p.parse_args()
    main(a.rows, a.chunk_rows, a.repeats, a.cpus)
