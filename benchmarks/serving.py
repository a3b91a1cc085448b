"""Online serving benchmark: ``mlops serve`` against ``mlflow models serve`` of the same champion.

Both servers serve ``models:/flight_delay_15@champion`` of one data folder, on 127.0.0.1, each with
the same number of worker processes (``--workers``, 1 by default: the main table):

* ours: ``MLOPS_DATA_DIR=DIR mlops serve --host 127.0.0.1 --port P`` (one uvicorn process; with
  ``--workers N`` when ``mlops serve`` has that option), ready when ``GET /ready`` answers 200;
  request ``POST /predict`` with ``{"features": [row]}``, probability read from
  ``predictions[0]["probability"]``. It logs every prediction to ``DIR/prediction_log`` (off the
  request path), so the benchmark adds rows there;
* mlflow: ``MLFLOW_TRACKING_URI=sqlite:///DIR/mlflow.db mlflow models serve -m
  models:/flight_delay_15@champion --env-manager local --workers N`` (uvicorn running
  ``mlflow.pyfunc.scoring_server.app``; ``mlflow models serve`` runs 1 uvicorn worker by default,
  only the Docker image from ``mlflow models build-docker`` defaults to one per CPU), ready when
  ``GET /ping`` answers 200; request ``POST /invocations`` with ``{"dataframe_records": [row]}``,
  probability read from ``predictions[0][1]`` (the model is logged with
  ``pyfunc_predict_fn="predict_proba"``).

Both run as shipped: MLflow's uvicorn keeps its access log (to a file here), ours has it off.

The payload is one real row with the model's signature columns (30 features): the first row of the
data folder's current training-set snapshot with every feature present (the logged input example's
rows come from the first day of the year and miss most history features; it is the fallback). Before
anything is timed, both servers must return the same probability for it (to 1e-12) and ours must name
the champion's version.

The load generator is this script in ``--generate`` mode, in its own process (never the servers'):
one asyncio event loop (uvloop when installed) with C keep-alive HTTP/1.1 connections written and
parsed by hand over ``asyncio.open_connection``, each sending its next request as soon as the last
answer arrived (closed loop). Per level and server: a warm-up of ``--warmup`` requests (not
recorded), then ``--requests`` requests, each latency taken from writing the request to reading the
whole answer. Throughput is the recorded requests over the wall time of that phase. Errors are
non-200 answers and broken connections. Levels run in the order C1 (mlflow, ours), C2 (mlflow,
ours), ..., so that a change in the machine's load hits both alike. The generator also reads the
servers' CPU time (``/proc``, every process of the server's session) around the recorded phase, and
its own: CPU milliseconds per request on each side.

The machine has 2 cores and the generator shares them with the server: at 1 worker the server
cannot use more than about one core (one event loop, and the GIL), the generator takes part of the
other. Latencies therefore include some client time and are not those of a dedicated load machine.
Other work on the machine skews everything, so each run starts only once the CPU time used by
everything (our idle servers included) over 2 s is below ``--max-busy`` cores (0.3), waiting
``--max-wait`` seconds (900) in all before running anyway; that figure and the 1-minute load
average are printed for every run.

If the data folder has no champion yet, ``mlops demo`` builds one first (about 90 s). The default
folder is ``data/`` when it has a champion, else ``benchmarks/.data-serving`` (git-ignored).

    .venv/bin/python benchmarks/serving.py [--data-dir DIR] [--requests 5000] [--warmup 500]
        [--concurrency 1,8,32] [--workers 1] [--servers mlflow,ours] [--max-busy 0.3]
        [--max-wait 900] [--mlflow-env OMP_NUM_THREADS=1] [--keep-logs]

Exit code 1 when a server does not start, the probabilities differ, or requests fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA_DIR = HERE / ".data-serving"
MODEL_NAME = "flight_delay_15"
ALIAS = "champion"
MODEL_URI = f"models:/{MODEL_NAME}@{ALIAS}"
HOST = "127.0.0.1"
SERVERS = ("mlflow", "ours")
START_TIMEOUT = 300.0  # seconds for a server to answer its readiness probe
RUN_TIMEOUT = 900.0  # seconds for one generator run
TOLERANCE = 1e-12


# --------------------------------------------------------------------------------------------
# Load generator (``--generate``: its own process, standard library only)
# --------------------------------------------------------------------------------------------

def session_processes(session: int) -> list[tuple[str, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every live process of the
    session ``session`` (a server started with ``start_new_session=True`` and its workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session:
            found.append((entry, fields))
    return found


def session_cpu_seconds(session: int) -> float:
    """User + system CPU seconds of every live process of the session ``session``."""
    return sum(int(f[11]) + int(f[12]) for _, f in session_processes(session)) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[int], q: float) -> float:
    """The ``q`` quantile of an ascending list, linear between closest ranks (numpy's default)."""
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


async def load(port: int, path: str, body: bytes, concurrency: int, warmup: int, requests: int,
               session: int) -> dict:
    message = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
               f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode("ascii") + body
    clock = time.perf_counter_ns
    connections: list = [None] * concurrency
    latencies: list[int] = []
    state = {"left": 0, "errors": 0, "reconnects": 0, "first_error": None, "statuses": {}}

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, bytes, bool]:
        writer.write(message)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if not chunked:
            return status, await reader.readexactly(length), close
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return status, b"".join(parts), close
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    def drop(slot: int) -> None:
        if connections[slot] is not None:
            connections[slot][1].close()
            connections[slot] = None

    async def worker(slot: int, record: bool) -> None:
        while state["left"] > 0:
            state["left"] -= 1
            try:
                if connections[slot] is None:
                    connections[slot] = await asyncio.open_connection(HOST, port)
                    state["reconnects"] += 1
                start = clock()
                status, answer, close = await exchange(*connections[slot])
                elapsed = clock() - start
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
                state["errors"] += 1
                state["first_error"] = state["first_error"] or repr(error)
                drop(slot)
                continue
            state["statuses"][status] = state["statuses"].get(status, 0) + 1
            if status != 200:
                state["errors"] += 1
                state["first_error"] = state["first_error"] or f"HTTP {status}: {answer[:200]!r}"
            elif record:
                latencies.append(elapsed)
            if close:
                drop(slot)

    state["left"] = max(warmup, concurrency)
    await asyncio.gather(*(worker(slot, False) for slot in range(concurrency)))
    warmup_errors = state["errors"]
    state["errors"], state["statuses"] = 0, {}
    opened = state["reconnects"]

    server_cpu = session_cpu_seconds(session) if session else 0.0
    client_cpu = time.process_time()
    started = time.perf_counter()
    state["left"] = requests
    await asyncio.gather(*(worker(slot, True) for slot in range(concurrency)))
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    server_cpu = (session_cpu_seconds(session) - server_cpu) if session else float("nan")
    for slot in range(concurrency):
        drop(slot)

    latencies.sort()
    ms = 1e-6
    return {
        "concurrency": concurrency, "requests": requests, "ok": len(latencies), "errors": state["errors"],
        "warmup_errors": warmup_errors, "reconnects": state["reconnects"] - opened,
        "first_error": state["first_error"], "statuses": state["statuses"], "wall": wall,
        "throughput": len(latencies) / wall if wall else 0.0,
        "p50": percentile(latencies, 0.50) * ms, "p90": percentile(latencies, 0.90) * ms,
        "p99": percentile(latencies, 0.99) * ms, "max": (latencies[-1] * ms) if latencies else float("nan"),
        "mean": (sum(latencies) / len(latencies) * ms) if latencies else float("nan"),
        "server_cpu_ms": server_cpu / requests * 1e3, "client_cpu_ms": client_cpu / requests * 1e3,
    }


def generate_main(args: argparse.Namespace) -> int:
    try:
        import uvloop
        loop_name = f"uvloop {uvloop.__version__}"
        runner = uvloop.run
    except ImportError:
        loop_name, runner = "asyncio", asyncio.run
    body = Path(args.body_file).read_bytes()
    result = runner(load(args.port, args.path, body, args.concurrency[0], args.warmup, args.requests,
                         args.session))
    result["loop"] = loop_name
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Data folder, champion and payload (driver)
# --------------------------------------------------------------------------------------------

def champion_version(data_dir: Path) -> str | None:
    """The champion's version in ``DIR/mlflow.db`` (read-only), or None when there is none."""
    database = data_dir / "mlflow.db"
    if not database.exists():
        return None
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            row = connection.execute(
                "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
                (MODEL_NAME, ALIAS)).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def sibling(executable: str) -> str:
    """An entry point of the venv running this script (``.venv/bin/mlops``, ``.venv/bin/mlflow``)."""
    path = Path(sys.executable).parent / executable
    if not path.exists():
        raise SystemExit(f"{path} not found: run this script with the project's venv (.venv/bin/python)")
    return str(path)


def build_champion(data_dir: Path) -> None:
    """``mlops demo`` into ``data_dir`` (its own DAGSTER_HOME, the project's dagster.yaml)."""
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "MLOPS_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home)}
    log = data_dir / "demo.log"
    print(f"no champion in {data_dir}: running mlops demo (about 90 s; log {log}) ...", flush=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call([sibling("mlops"), "demo"], stdout=out, stderr=subprocess.STDOUT, env=env,
                               cwd=ROOT)
    if code != 0 or champion_version(data_dir) is None:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"mlops demo failed (exit {code}), no champion:\n{tail}")
    print(f"  champion built in {time.perf_counter() - started:.0f} s", flush=True)


def resolve_data_dir(requested: Path | None) -> Path:
    if requested is not None:
        data_dir = requested.resolve()
    elif champion_version(ROOT / "data") is not None:
        data_dir = ROOT / "data"
    else:
        data_dir = DEFAULT_DATA_DIR
    if champion_version(data_dir) is None:
        build_champion(data_dir)
    return data_dir


def pick_row(data_dir: Path) -> tuple[dict, str]:
    """One real feature vector with the champion's signature columns, as JSON-ready values, and
    where it comes from."""
    import math

    import mlflow
    import pandas as pd
    from mlflow.models import Model

    mlflow.set_tracking_uri(f"sqlite:///{data_dir / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{data_dir / 'mlflow.db'}")
    info = mlflow.models.get_model_info(MODEL_URI)
    columns = info.signature.inputs.input_names()
    kinds = {spec.name: str(spec.type) for spec in info.signature.inputs.inputs}

    frame, source = None, ""
    snapshots = data_dir / "lake" / "snapshots" / "training_dataset"
    current = snapshots / "_CURRENT"
    if current.exists():
        path = snapshots / current.read_text().strip()
        snapshot = pd.read_parquet(path)
        if set(columns) <= set(snapshot.columns):
            complete = snapshot[snapshot[columns].notna().all(axis=1)]
            if len(complete):
                frame = complete.head(1)
                label = f"flight_id {frame['flight_id'].iloc[0]}, " if "flight_id" in frame else ""
                source = (f"first complete row of the training-set snapshot {path.name} ({label}"
                          f"{len(complete):,} of {len(snapshot):,} rows have every feature)")
    if frame is None:
        local = mlflow.artifacts.download_artifacts(MODEL_URI)
        frame = Model.load(local).load_input_example(local).head(1)
        source = "first row of the logged input example"

    def plain(value, column: str):
        if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
            return None
        return str(value) if "string" in kinds.get(column, "") else float(value)

    return {column: plain(frame[column].iloc[0], column) for column in columns}, source


# --------------------------------------------------------------------------------------------
# Servers (driver)
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def http(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, bytes]:
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def rss_mb(session: int) -> float:
    """Resident memory of every process of a server's session, in MB."""
    total = 0
    for pid, _fields in session_processes(session):
        try:
            with open(f"/proc/{pid}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total / 1024


class Server:
    """One server process (its own session, so that it and its workers stop together)."""

    def __init__(self, name: str, data_dir: Path, workers: int, log_dir: Path, ours_workers_flag: bool,
                 extra_env: dict[str, str] | None = None):
        self.name, self.workers = name, workers
        self.port = free_port()
        # The venv's bin first on PATH: ``mlflow models serve`` runs ``uvicorn`` through bash.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        if name == "ours":
            env["MLOPS_DATA_DIR"] = str(data_dir)
            self.command = [sibling("mlops"), "serve", "--host", HOST, "--port", str(self.port)]
            if ours_workers_flag:
                self.command += ["--workers", str(workers)]
            self.ready_path, self.path = "/ready", "/predict"
        else:
            env["MLFLOW_TRACKING_URI"] = f"sqlite:///{data_dir / 'mlflow.db'}"
            env.pop("MLFLOW_MODELS_WORKERS", None)
            env.update(extra_env or {})
            self.command = [sibling("mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
                            "--host", HOST, "-p", str(self.port), "--workers", str(workers)]
            self.ready_path, self.path = "/ping", "/invocations"
        self.log = log_dir / f"{name}-w{workers}.log"
        self.started = time.perf_counter()
        self._out = open(self.log, "w")
        self.process = subprocess.Popen(self.command, stdout=self._out, stderr=subprocess.STDOUT, env=env,
                                        cwd=log_dir, start_new_session=True)
        self.startup = None

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if http(self.port, "GET", self.ready_path, timeout=2)[0] == 200:
                    self.startup = time.perf_counter() - self.started
                    return True
            except OSError:
                pass
            time.sleep(0.25)
        return False

    def body(self, row: dict) -> bytes:
        key = "features" if self.name == "ours" else "dataframe_records"
        return json.dumps({key: [row]}, separators=(",", ":")).encode()

    def probability(self, answer: dict) -> float:
        first = answer["predictions"][0]
        if self.name == "ours":
            return float(first["probability"])
        return float(first[1] if isinstance(first, list) else first)

    def tail(self, lines: int = 30) -> str:
        self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self._out.close()


def ours_takes_workers() -> bool | None:
    """Whether ``mlops serve`` exists (None if not) and has a ``--workers`` option."""
    done = subprocess.run([sibling("mlops"), "serve", "--help"], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return None
    return "--workers" in done.stdout


def busy_cores(seconds: float = 2.0) -> float:
    """Cores kept busy by everything on the machine over ``seconds`` (from ``/proc/stat``)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:9]]
        return sum(values), values[3] + values[4]  # all, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    spent = total2 - total
    return (spent - (idle2 - idle)) / spent * (os.cpu_count() or 1) if spent else 0.0


def wait_for_quiet(max_busy: float, deadline: float) -> float:
    """Poll until the machine uses less than ``max_busy`` cores (until ``deadline`` at most)."""
    busy = busy_cores()
    while busy >= max_busy and time.monotonic() < deadline:
        print(f"(busy {busy:.2f} cores, waiting)", end=" ", flush=True)
        time.sleep(8)
        busy = busy_cores()
    return busy


def run_generator(server: Server, body_file: Path, concurrency: int, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, str(Path(__file__).resolve()), "--generate", "--port", str(server.port),
               "--path", server.path, "--body-file", str(body_file), "--concurrency", str(concurrency),
               "--requests", str(args.requests), "--warmup", str(args.warmup),
               "--session", str(server.process.pid)]
    load_before = os.getloadavg()[0]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"  [{server.name} c={concurrency}] generator timed out after {RUN_TIMEOUT:.0f} s", flush=True)
        return None
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        print(f"  [{server.name} c={concurrency}] generator failed (exit {done.returncode}):\n{done.stderr[-3000:]}",
              flush=True)
        return None
    result = json.loads(results[-1][len("RESULT "):])
    result["load"] = load_before
    return result


# --------------------------------------------------------------------------------------------
# Report (driver)
# --------------------------------------------------------------------------------------------

def report(results: dict, levels: list[int], workers: int, servers: list[str]) -> None:
    print(f"\nResults, {workers} worker process(es) per server (latency from writing the request to "
          "reading the whole answer; req/s over the recorded phase; CPU ms/req: CPU time of the server's "
          "processes and of the generator over the recorded phase, divided by the requests; busy: cores "
          "in use on the machine just before the run; load: 1-min load average then):")
    header = (f"{'server':<7} {'conc':>4} {'requests':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
              f"{'max ms':>7} {'req/s':>8} {'errors':>6} {'srv CPU':>7} {'gen CPU':>7} {'busy':>5} {'load':>5}")
    print(header)
    print("-" * len(header))
    for concurrency in levels:
        for name in servers:
            r = results.get((name, concurrency))
            if r is None:
                print(f"{name:<7} {concurrency:>4} {'failed':>8}")
                continue
            print(f"{name:<7} {concurrency:>4} {r['requests']:>8,} {r['p50']:>7.2f} {r['p90']:>7.2f} "
                  f"{r['p99']:>7.2f} {r['max']:>7.1f} {r['throughput']:>8,.0f} {r['errors']:>6} "
                  f"{r['server_cpu_ms']:>7.2f} {r['client_cpu_ms']:>7.2f} {r['busy']:>5.2f} {r['load']:>5.2f}")
    if not {"ours", "mlflow"} <= set(servers):
        return
    print("\nRatios (mlflow / ours for latency: > 1 means ours is faster; ours / mlflow for throughput):")
    header = f"{'conc':>4} {'p50':>7} {'p99':>7} {'req/s':>7}"
    print(header)
    print("-" * len(header))
    speedups = {}
    for concurrency in levels:
        ours, theirs = results.get(("ours", concurrency)), results.get(("mlflow", concurrency))
        if ours is None or theirs is None:
            continue
        speedups[concurrency] = ours["throughput"] / theirs["throughput"]
        print(f"{concurrency:>4} {theirs['p50'] / ours['p50']:>6.2f}x {theirs['p99'] / ours['p99']:>6.2f}x "
              f"{speedups[concurrency]:>6.2f}x")
    ours8 = results.get(("ours", 8))
    if ours8 is not None:
        print(f"target p99 <= 10 ms at concurrency 8 (ours, {workers} worker(s)): {ours8['p99']:.2f} ms: "
              f"{'met' if ours8['p99'] <= 10 else 'MISSED'}")
    if speedups:
        verdicts = ", ".join(f"c={c} {s:.2f}x" for c, s in speedups.items())
        missed = [f"c={c}" for c, s in speedups.items() if s < 2]
        print(f"target throughput >= 2x MLflow's: {verdicts}: "
              f"{'MISSED at ' + ', '.join(missed) if missed else 'met at every level'}")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("mlflow", "scikit-learn", "uvicorn", "fastapi", "starlette", "httptools", "uvloop"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} -")
    return ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="data folder with (or to build) a champion "
                        "(default: data/ if it has one, else benchmarks/.data-serving)")
    parser.add_argument("--requests", type=int, default=5000, help="recorded requests per level and server")
    parser.add_argument("--warmup", type=int, default=500, help="requests before each recorded phase")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--workers", default="1", help="worker processes per server; a comma-separated list "
                        "runs one table per count")
    parser.add_argument("--servers", default="mlflow,ours", help="which servers (mlflow, ours)")
    parser.add_argument("--mlflow-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of MLflow's server, e.g. OMP_NUM_THREADS=1 (repeatable)")
    parser.add_argument("--max-busy", type=float, default=0.3,
                        help="start each run once the machine uses fewer cores than this")
    parser.add_argument("--max-wait", type=float, default=900, help="seconds to wait for quiet in all, at most")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs and the payloads")
    # Generator mode (a child of the driver).
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--body-file", help=argparse.SUPPRESS)
    parser.add_argument("--session", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.concurrency = list(dict.fromkeys(int(c) for c in str(args.concurrency).split(",") if c))
    if args.generate:
        return generate_main(args)

    worker_counts = [int(w) for w in args.workers.split(",") if w]
    mlflow_env = dict(item.split("=", 1) for item in args.mlflow_env)
    servers = [s for s in args.servers.split(",") if s]
    if not servers or set(servers) - set(SERVERS):
        parser.error(f"--servers takes a comma-separated subset of {', '.join(SERVERS)}")
    servers = [s for s in SERVERS if s in servers]  # mlflow first at each level

    print(f"load average at start: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1 / 5 / 15 min) "
          f"on {os.cpu_count()} CPUs", flush=True)
    print(f"versions: Python {sys.version.split()[0]}, {versions()}")
    if "ours" in servers:
        takes_workers = ours_takes_workers()
        if takes_workers is None:
            print("`mlops serve` is not available (no serve subcommand yet): running MLflow only")
            servers = [s for s in servers if s != "ours"]
            takes_workers = False
        elif not takes_workers and any(w != 1 for w in worker_counts):
            print("`mlops serve` has no --workers option: only 1 worker per server")
            worker_counts = [1]
    else:
        takes_workers = False

    data_dir = resolve_data_dir(args.data_dir)
    version = champion_version(data_dir)
    row, source = pick_row(data_dir)
    print(f"data folder {data_dir}: {MODEL_URI} is version {version}")
    print(f"payload: one row, {len(row)} signature columns, {source}")
    print(f"MLflow's default: `mlflow models serve` runs 1 uvicorn worker process unless --workers / "
          f"MLFLOW_MODELS_WORKERS says otherwise (`mlflow models build-docker` images: one per CPU); "
          f"here both servers run {', '.join(map(str, worker_counts))} worker process(es)"
          + (f"; MLflow's server with {' '.join(args.mlflow_env)}" if mlflow_env else ""))
    print(f"load generator: one process, {args.warmup:,} warm-up + {args.requests:,} recorded requests per "
          f"level and server at concurrency {', '.join(map(str, args.concurrency))} (keep-alive connections)")

    log_dir = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    ok = True
    try:
        for workers in worker_counts:
            started: dict[str, Server] = {}
            try:
                bodies, probabilities = {}, {}
                for name in servers:
                    started[name] = Server(name, data_dir, workers, log_dir, takes_workers, mlflow_env)
                for name, server in started.items():
                    if not server.wait_ready():
                        print(f"[{name}] did not get ready (exit {server.process.poll()}); "
                              f"{' '.join(server.command)}\n{server.tail()}", flush=True)
                        return 1
                    body = server.body(row)
                    status, answer = http(server.port, "POST", server.path, body)
                    if status != 200:
                        print(f"[{name}] answered {status}: {answer[:500]!r}")
                        return 1
                    decoded = json.loads(answer)
                    probabilities[name] = server.probability(decoded)
                    bodies[name] = log_dir / f"{name}.json"
                    bodies[name].write_bytes(body)
                    extra = ""
                    if name == "ours":
                        first = decoded["predictions"][0]
                        extra = f", model_version {first.get('model_version')}, arm {first.get('arm')}"
                        if str(first.get("model_version")) != version:
                            print(f"[ours] serves version {first.get('model_version')}, the champion is {version}")
                            ok = False
                    print(f"[{name}] ready in {server.startup:.1f} s on port {server.port} (pid {server.process.pid},"
                          f" {workers} worker(s), {rss_mb(server.process.pid):,.0f} MB RSS); payload {len(body)} "
                          f"bytes; probability {probabilities[name]!r}{extra}", flush=True)
                if len(probabilities) == 2:
                    gap = abs(probabilities["ours"] - probabilities["mlflow"])
                    print(f"same probability from both servers: |difference| = {gap:.3g} "
                          f"({'ok' if gap <= TOLERANCE else 'DIFFERENT'}, tolerance {TOLERANCE:g})", flush=True)
                    if gap > TOLERANCE:
                        return 1

                results = {}
                deadline = time.monotonic() + args.max_wait
                for concurrency in args.concurrency:
                    for name in servers:
                        server = started[name]
                        print(f"  {name:<6} c={concurrency:<3}", end=" ", flush=True)
                        busy = wait_for_quiet(args.max_busy, deadline)
                        print(f"busy {busy:.2f} cores, load {os.getloadavg()[0]:.2f} ...", end=" ", flush=True)
                        result = run_generator(server, bodies[name], concurrency, args)
                        if result is None:
                            ok = False
                            continue
                        result["busy"] = busy
                        results[(name, concurrency)] = result
                        print(f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                              f"{result['throughput']:,.0f} req/s, {result['errors']} errors"
                              + (f" (first: {result['first_error']})" if result["errors"] else ""), flush=True)
                        if result["errors"] or result["warmup_errors"]:
                            ok = False
                for name, server in started.items():
                    print(f"[{name}] RSS after the runs: {rss_mb(server.process.pid):,.0f} MB")
                loop = next(iter(results.values()))["loop"] if results else "-"
                print(f"generator event loop: {loop}")
                report(results, args.concurrency, workers, servers)
            finally:
                for server in started.values():
                    server.stop()
    finally:
        if args.keep_logs:
            print(f"kept {log_dir} (servers' logs, payloads)")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
