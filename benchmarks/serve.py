"""The server under load, side by side in one run, beside the HTTP floor and the raw onnxruntime call.

1. wrk (Debian's package: `apt-get install wrk`) at concurrency 1, 8 and 32 against, in turn: a minimal Starlette app on
   uvicorn that returns a constant (the HTTP floor, the ratios' reference), the same constant from a bare ASGI app
   (uvicorn's own share of the floor; `mlsys serve` answers its routes that way), `mlsys serve` with an exported
   model and the durable prediction log (the default: each answer's rows are in the process's journal file before it
   is sent, and in SQLite within 0.2 s), and the same with `serve.durable_log = false` (rows kept in memory until
   written every 0.2 s), and the same with `serve.pack_inputs = false` (the model's columns fed one array each, as
   exported, rather than in two blocks). Servers pinned to core 0, wrk to core 1; they take turns, three rounds of
   each concurrency, and the median round is shown. P50/P95/P99 latency and requests per second, the ratios to the
   floor, durable over not durable, and packed over not packed, and each server's CPU time a request (all its
   threads, and the kernel's work on loopback that its writes pay for, from /proc): unlike a median at concurrency
   1, it does not depend on how soon an idle core wakes (see the serve notebook).
1b. The amplification body of issue 15 (349,000 empty records, just under 1 MB) sent again and again to `mlsys serve`
   while `/healthz` is asked every 10 ms: the worst and the median `/healthz` time, and the size of the big answer.
2. The raw onnxruntime call for the same record in-process (prepared arrays; and from the JSON body, parsed and
   checked the way the server does), for the overhead ratio; the model packed as the server opens it, and as exported.
3. Cold start (launch to ready) and resident memory of `mlsys serve`, packed and not.

Batch scoring is measured in `benchmarks/score.py`.

    python benchmarks/serve.py [--seconds 10]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import httpx
import numpy as np
warnings.filterwarnings('ignore')
BIN = Path(sys.executable).parent
ROUNDS = 3

FLOOR = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
async def predict(request):
    await request.body()
    return Response(b'{"ok":true}', media_type='application/json')
app = Starlette(routes=[Route('/v1/predict', predict, methods=['POST'])])
"""

BARE = """
async def app(scope, receive, send):
    if scope['type'] != 'http': return
    more = True
    while more: more = (await receive()).get('more_body', False)
    await send({'type': 'http.response.start', 'status': 200,
                'headers': [(b'content-length', b'11'), (b'content-type', b'application/json')]})
    await send({'type': 'http.response.body', 'body': b'{"ok":true}'})
"""

LUA = """
wrk.method = "POST"
wrk.body = io.open("%s"):read("*a")
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%f %%f %%f %%d %%d %%d\\n", latency:percentile(50), latency:percentile(95),
           latency:percentile(99), summary.requests, summary.duration,
           summary.errors.status + summary.errors.connect + summary.errors.timeout))
end
"""


def port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start(args, ready, env=None):
    "Launch a server pinned to core 0; the process and its seconds until `ready()`."
    t0 = time.perf_counter()
    p = subprocess.Popen(['taskset', '-c', '0', *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        try:
            if ready(): return p, time.perf_counter() - t0
        except httpx.TransportError: pass
        if p.poll() is not None: raise RuntimeError(p.stderr.read().decode())
        time.sleep(0.01)


def wrk(url, lua, conns, seconds):
    out = subprocess.run(['taskset', '-c', '1', 'wrk', '-t1', f'-c{conns}', f'-d{seconds}s', '-s', lua, url],
                         capture_output=True, text=True).stdout
    p50, p95, p99, n, dur, errors = out.split('RESULT ')[1].split()
    return dict(p50=float(p50) / 1e3, p95=float(p95) / 1e3, p99=float(p99) / 1e3, rps=int(n) / (int(dur) / 1e6),
                errors=int(errors), n=int(n))


def cpu_seconds(pid):
    "The CPU time a process (all its threads) has used so far, in seconds."
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')   # utime, stime


def median_us(f, n=3000):
    for _ in range(200): f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def amplification(url, seconds):
    "The 349,000-empty-records body sent for `seconds` while /healthz is asked every 10 ms: how long /healthz waits."
    import threading
    big = b'{"records":[' + b','.join([b'{}'] * 349_000) + b']}'
    answers, waits, stop = [], [], threading.Event()
    def send():
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post(url + '/v1/predict', content=big, headers={'Content-Type': 'application/json'})
                answers.append((r.status_code, len(r.content), time.perf_counter() - t0))
    t = threading.Thread(target=send); t.start()
    with httpx.Client(timeout=120) as c:
        end = time.time() + seconds
        while time.time() < end:
            t0 = time.perf_counter(); c.get(url + '/healthz'); waits.append(time.perf_counter() - t0); time.sleep(0.01)
    stop.set(); t.join()
    print(f"amplification body ({len(big):,} bytes, 349,000 empty records) sent {len(answers)} times: answers "
          f"{sorted({a[0] for a in answers})} of at most {max(a[1] for a in answers):,} bytes in at most "
          f"{max(a[2] for a in answers) * 1e3:.0f} ms; /healthz meanwhile ({len(waits)} probes): worst "
          f"{max(waits) * 1e3:.1f} ms, median {statistics.median(waits) * 1e3:.2f} ms\n")


def main(seconds):
    if not shutil.which('wrk'): sys.exit('wrk is needed: apt-get install wrk')
    from mlsys.config import run_file
    from mlsys.data import run_ingest
    from mlsys.example import example_run, example_table
    from mlsys.export import run_export
    from mlsys.features import run_features
    from mlsys.runtime import LoadedModel
    from mlsys.serve import parse_records
    from mlsys.train import run_train
    tmp = Path(tempfile.mkdtemp())
    run_dir = example_run(run_ingest, run_features, run_train, run_export, max_epochs=2, trials=0, search={},
                          repeats=10)
    model_path = run_file(run_dir, 'model')
    m = LoadedModel(model_path.read_bytes(), 'bench', packed=True)
    unpacked = LoadedModel(model_path.read_bytes(), 'bench')
    rec = example_table().drop('churn').row(0, named=True)
    body = json.dumps(rec).encode(); (tmp/'body.json').write_bytes(body)
    (tmp/'post.lua').write_text(LUA % (tmp/'body.json'))
    (tmp/'floor_app.py').write_text(FLOOR); (tmp/'bare_app.py').write_text(BARE)

    def in_process(lm):
        "The median onnxruntime call on prepared arrays, and from the body (parsed, checked, arrays), in us."
        cols, _, _ = parse_records(body, lm)
        return median_us(lambda: lm.predict(cols)), median_us(lambda: lm.predict(parse_records(body, lm)[0]))
    in_process(unpacked)                              # warms the machine up
    res = {label: in_process(lm) for label, lm in (('packed (as served)', m), ('not packed', unpacked))}
    for label, (r, parsed) in res.items():
        print(f"in-process, one record, model inputs {label}: onnxruntime on prepared arrays {r:.1f} us; "
              f"JSON parse + contract check + arrays + run {parsed:.1f} us")
    print()
    raw = res['packed (as served)'][0]

    serve = lambda p: [str(BIN/'mlsys'), 'serve', '--model', str(model_path), '--port', str(p)]
    const = lambda mod: lambda p: [str(BIN/'uvicorn'), f'{mod}:app', '--app-dir', str(tmp), '--port', str(p),
                                   '--log-level', 'warning', '--no-access-log']
    servers, procs, pids = {}, [], {}
    try:
        for i, (name, args_of, durable, pack) in enumerate((
                ('floor (Starlette constant)', const('floor_app'), None, None),
                ('floor (bare ASGI constant)', const('bare_app'), None, None),
                ('mlsys serve', serve, 'true', 'true'), ('mlsys serve, log not durable', serve, 'false', 'true'),
                ('mlsys serve, not packed', serve, 'true', 'false'))):
            env = os.environ | dict(MLSYS_PATHS_HOME=str(tmp/f'home-{i}'), MLSYS_SERVE_DURABLE_LOG=durable or 'true',
                                    MLSYS_SERVE_PACK_INPUTS=pack or 'true')
            p = port(); url = f'http://127.0.0.1:{p}'
            ready = ((lambda: httpx.get(url + '/readyz', timeout=1).status_code == 200) if durable else
                     (lambda: httpx.post(url + '/v1/predict', content=body, timeout=1).status_code == 200))
            proc, took = start(args_of(p), ready, env); procs.append(proc); servers[name] = url
            pids[name] = proc.pid
            if durable == 'true':
                rss = int(Path(f'/proc/{proc.pid}/status').read_text().split('VmRSS:')[1].split()[0]) / 1024
                print(f"{name} cold start: {took:.2f} s to ready; {rss:.0f} MB resident once ready\n")
                if pack == 'true': amplification(url, seconds)
            wrk(url + '/v1/predict', str(tmp/'post.lua'), 1, 2)          # warm-up
        # all stay up (idle but for the one measured); each level is measured in rounds, the servers taking
        # turns, so that a change in the machine's load meets each of them alike; the median of the rounds is shown
        runs = {name: {c: [] for c in (1, 8, 32)} for name in servers}
        for c in (1, 8, 32):
            for _ in range(ROUNDS):
                for name, url in servers.items():
                    before = cpu_seconds(pids[name])
                    r = wrk(url + '/v1/predict', str(tmp/'post.lua'), c, seconds)
                    r['cpu'] = (cpu_seconds(pids[name]) - before) / max(r['n'], 1) * 1e6   # us a request
                    runs[name][c].append(r)
        results = {name: {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in byc.items()}
                   for name, byc in runs.items()}
    finally:
        for proc in procs: proc.terminate(); proc.wait()
    floor = results['floor (Starlette constant)']
    print(f"{'server':28s} {'conc':>4s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'req/s':>9s} {'errors':>6s} "
          f"{'p50/floor':>9s} {'rps/floor':>9s} {'CPU us/req':>10s}")
    for name, rs in results.items():
        for c, r in rs.items():
            print(f"{name:28s} {c:4d} {r['p50']:8.3f} {r['p95']:8.3f} {r['p99']:8.3f} {r['rps']:9.0f} "
                  f"{int(r['errors']):6d} "
                  f"{r['p50'] / floor[c]['p50']:9.2f} {r['rps'] / floor[c]['rps']:9.2f} {r['cpu']:10.1f}")
    print(f"\nmlsys p50 at concurrency 1 over the in-process raw call: "
          f"{results['mlsys serve'][1]['p50'] * 1e3 / raw:.1f}x")
    dur, fast = results['mlsys serve'], results['mlsys serve, log not durable']
    print(f"\nthe durable prediction log's cost (durable / not durable):\n"
          f"{'conc':>4s} {'p50':>6s} {'p99':>6s} {'req/s':>6s}")
    for c in (1, 8, 32):
        print(f"{c:4d} {dur[c]['p50'] / fast[c]['p50']:6.2f} {dur[c]['p99'] / fast[c]['p99']:6.2f} "
              f"{dur[c]['rps'] / fast[c]['rps']:6.2f}")
    plain = results['mlsys serve, not packed']
    print(f"\nthe model's inputs in two blocks (packed / not packed):\n"
          f"{'conc':>4s} {'p50':>6s} {'p99':>6s} {'req/s':>6s}")
    for c in (1, 8, 32):
        print(f"{c:4d} {dur[c]['p50'] / plain[c]['p50']:6.2f} {dur[c]['p99'] / plain[c]['p99']:6.2f} "
              f"{dur[c]['rps'] / plain[c]['rps']:6.2f}")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=int, default=10)
    main(**vars(ap.parse_args()))
