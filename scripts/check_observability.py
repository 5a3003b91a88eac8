#!/usr/bin/env python3
"""Proves the observability story holds, against real processes and a real Prometheus.

1. Dashboards are what dashboards/generate.py makes, and each is well formed: valid
   JSON, a title, the ${datasource} variable, unique panel IDs, every panel with that
   data source, a title, a description and a unit, and no hard-coded datasource UID.
2. Every panel expression parses (promtool check rules on a generated rule file).
3. A relay in token mode (a key pair from `relay keygen`; a relay given no keys must
   refuse to start) and a loadgen minting tokens with that key run on loopback; a
   scrape of each, once busy, passes `promtool check metrics` with nothing reported.
4. Every metric name used in a panel or rule is exported by the relay or loadgen
   (names are extracted from the PromQL; unknown ones are listed).
5. A real Prometheus (own port, own temp data dir, 1 s scrape and rule interval)
   scrapes both; every rule loads and evaluates healthy, and every panel query,
   every recording rule expression and every recorded series returns a non-empty
   result through the HTTP API. The script polls until that holds, bounded by a
   deadline; it never sleeps to synchronise.

Loopback only. Python 3 standard library only. Needs `prometheus` and `promtool`.
"""
import json
import os
import pathlib
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
RULES = sorted((DASHBOARDS / "rules").glob("*.yml"))
DEADLINE = 150.0  # seconds for the live part, generous for a loaded 2-core machine
RATE_INTERVAL = "15s"  # what $__rate_interval stands for at a 1 s scrape interval
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "Inf", "NaN"}

failures = []
passed = 0


def check(ok, what):
    global passed
    if ok:
        passed += 1
        print(f"  ok   {what}")
    else:
        failures.append(what)
        print(f"  FAIL {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None, ""


def poll(what, fn, deadline):
    """Calls fn until it returns a truthy value or the deadline passes."""
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.25)  # a poll interval, not synchronisation: the condition decides
    raise SystemExit(f"timed out waiting for {what}")


# ---- dashboards ----------------------------------------------------------------

def load_boards():
    boards = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        try:
            boards[path.name] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            check(False, f"{path.name} is valid JSON ({e})")
    return boards


def defaults(board):
    subs = {"__rate_interval": RATE_INTERVAL, "instance": ".*"}
    for v in board.get("templating", {}).get("list", []):
        if v.get("type") in ("textbox", "constant"):
            subs[v["name"]] = str(v.get("query", ""))
    return subs


def substitute(expr, subs):
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in subs:
            raise KeyError(name)
        return subs[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def structural(boards):
    print("== dashboards: structure")
    gen = subprocess.run([sys.executable, str(DASHBOARDS / "generate.py"), "--check"],
                         capture_output=True, text=True)
    check(gen.returncode == 0, f"dashboards match generate.py {gen.stdout.strip()}")
    queries = []
    for name, b in boards.items():
        problems = []
        if not b.get("title"):
            problems.append("no title")
        variables = b.get("templating", {}).get("list", [])
        if not any(v.get("name") == "datasource" and v.get("type") == "datasource" for v in variables):
            problems.append("no ${datasource} variable")
        ids = [p.get("id") for p in b.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.append(f"duplicate panel IDs {ids}")
        text = json.dumps(b)
        for uid in re.findall(r'"uid":\s*"([^"]*)"', text):
            if uid not in ("${datasource}", b.get("uid")):
                problems.append(f"hard-coded uid {uid}")
        subs = defaults(b)
        for p in b.get("panels", []):
            label = f"{name} panel {p.get('id')} {p.get('title')!r}"
            if p.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{label}: data source is not ${{datasource}}")
            for key in ("title", "description"):
                if not p.get(key):
                    problems.append(f"{label}: no {key}")
            if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                problems.append(f"{label}: no unit")
            if not p.get("targets"):
                problems.append(f"{label}: no query")
            for t in p.get("targets", []):
                if t.get("datasource", {}).get("uid") != "${datasource}":
                    problems.append(f"{label}: target data source is not ${{datasource}}")
                try:
                    queries.append((f"{label} [{t.get('refId')}]", substitute(t["expr"], subs)))
                except KeyError as e:
                    problems.append(f"{label}: unknown variable {e}")
        check(not problems, f"{name}: {len(b.get('panels', []))} panels well formed"
              + ("" if not problems else ": " + "; ".join(problems)))
    return queries


def promtool_parse(queries, tmp):
    print("== PromQL: every panel expression parses (promtool)")
    doc = {"groups": [{"name": "panels", "rules": [
        {"record": f"check:panel_{i}", "expr": q} for i, (_, q) in enumerate(queries)]}]}
    path = tmp / "panels.rules.yml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    check(r.returncode == 0, f"{len(queries)} panel expressions parse" +
          ("" if r.returncode == 0 else ":\n" + r.stdout + r.stderr))
    r = subprocess.run(["promtool", "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    check(r.returncode == 0, "promtool check rules " + " ".join(p.name for p in RULES) +
          ("" if r.returncode == 0 else ":\n" + r.stdout + r.stderr))


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set()
    for m in re.finditer(r"(?<![0-9.A-Za-z_:])[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0) in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def exported_names(text):
    return {re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0)
            for line in text.splitlines() if line and not line.startswith("#")}


# ---- live processes -------------------------------------------------------------

class Proc:
    """A child process whose output lines are collected by a reader thread."""

    def __init__(self, name, argv, stream, **kw):
        self.name = name
        self.lines = queue.Queue()
        self.log = []
        pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if stream == "stdout" \
            else {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        self.p = subprocess.Popen(argv, text=True, **pipe, **kw)
        src = self.p.stdout if stream == "stdout" else self.p.stderr
        threading.Thread(target=self._read, args=(src,), daemon=True).start()

    def _read(self, src):
        for line in src:
            self.log.append(line)
            self.lines.put(line)

    def wait_line(self, pattern, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.p.poll() is not None and self.lines.empty():
                raise SystemExit(f"{self.name}: no line matching {pattern!r}; output:\n" + "".join(self.log[-30:]))
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            m = re.search(pattern, line)
            if m:
                return m

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def binaries():
    subprocess.run(["cargo", "build", "--locked", "--quiet", "-p", "orelay-relay", "-p", "orelay-loadgen",
                    "--bins"], cwd=ROOT, check=True)
    meta = json.loads(subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                                     cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    debug = pathlib.Path(meta["target_directory"]) / "debug"
    return debug / "relay", debug / "loadgen"


def prom_query(base, q):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    status, body = http_get(url, timeout=10)
    if status != 200:
        return None, body
    data = json.loads(body)
    return data["data"]["result"], None


def issuer_key(relay_bin, tmp, name="issuer.key"):
    """A token-signing key pair from `relay keygen`: the private key file (for loadgen)
    and the `--token-key KID=PUBLIC_KEY` flag value it prints (for the relay)."""
    key = tmp / name
    r = subprocess.run([str(relay_bin), "keygen", "--out", str(key)], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"--token-key (\S+=\S+)", r.stdout)
    if r.returncode != 0 or not m or not key.exists():
        raise SystemExit(f"relay keygen failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return key, m.group(1)


def refuses_without_keys(relay_bin):
    """Token mode is the default and needs keys: a relay given none must not serve."""
    r = subprocess.run([str(relay_bin), "--listen", "127.0.0.1:0", "--metrics-addr", "off"],
                       capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if not k.startswith("ORELAY_")})
    check(r.returncode != 0 and "token_keys" in r.stderr,
          "a relay with no token keys refuses to start and says why" +
          ("" if r.returncode != 0 else f" (it exited {r.returncode}: {r.stdout.strip()[:200]})"))


def live(queries, tmp):
    relay_bin, loadgen_bin = binaries()
    refuses_without_keys(relay_bin)
    key_file, token_key = issuer_key(relay_bin, tmp)
    deadline = time.monotonic() + DEADLINE
    procs = []
    try:
        print("== live: relay (token mode) + loadgen + Prometheus on loopback")
        relay = Proc("relay", [str(relay_bin), "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
                               "--token-key", token_key], "stdout")
        procs.append(relay)
        quic = relay.wait_line(r"relay listening on (\S+) ", deadline).group(1)
        fingerprint = relay.wait_line(r"fingerprint: ([0-9a-f]{64})", deadline).group(1)
        relay_metrics = relay.wait_line(r"metrics on http://(\S+)/metrics", deadline).group(1)
        status, _ = http_get(f"http://{relay_metrics}/healthz")
        check(status == 200, "relay /healthz is 200")
        status, _ = http_get(f"http://{relay_metrics}/readyz")
        check(status == 200, "relay /readyz is 200 while accepting joins")
        loadgen = Proc("loadgen", [str(loadgen_bin), "run", "--relay", quic, "--cert-fingerprint", fingerprint,
                                   "--token-key", str(key_file),
                                   "--meetings", "4", "--participants", "4", "--join-window", "1",
                                   "--duration", str(int(DEADLINE)), "--metrics-addr", "127.0.0.1:0"], "stderr")
        procs.append(loadgen)
        loadgen_metrics = loadgen.wait_line(r"metrics on http://(\S+)/metrics", deadline).group(1)

        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in RULES],
            "scrape_configs": [
                {"job_name": "orelay", "static_configs": [{"targets": [relay_metrics]}]},
                {"job_name": "orelay-loadgen", "static_configs": [{"targets": [loadgen_metrics]}]},
            ],
        }
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        prom = Proc("prometheus", ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                   "--log.level=warn"], "stdout")
        procs.append(prom)
        base = f"http://127.0.0.1:{port}"
        poll("Prometheus ready", lambda: http_get(f"{base}/-/ready")[0] == 200, deadline)

        def busy_scrape():
            _, text = http_get(f"http://{relay_metrics}/metrics")
            counts = re.findall(r'^orelay_forward_latency_seconds_count\{transport="(\w+)"\} (\d+)', text, re.M)
            rtt = re.search(r"^orelay_quic_rtt_seconds_count (\d+)", text, re.M)
            busy = len(counts) == 2 and all(int(n) > 0 for _, n in counts) and rtt and int(rtt.group(1)) > 0
            return text if busy else None
        relay_text = poll("a busy relay (media forwarded both ways, RTT sampled)", busy_scrape, deadline)
        loadgen_text = poll("loadgen objects received", lambda: (lambda t: t if re.search(
            r'^orelay_loadgen_objects_received_total\{kind="video"\} [1-9]', t, re.M) else None)(
            http_get(f"http://{loadgen_metrics}/metrics")[1]), deadline)
        # Every hook the data plane calls shows traffic: a zero here is a hook that was
        # lost (an exported zero still makes every panel "non-empty").
        moving = ['orelay_groups_received_total{kind="video"}', 'orelay_groups_sent_total{kind="video"}',
                  'orelay_media_received_bytes_total{kind="video"}', 'orelay_media_sent_bytes_total{kind="video"}',
                  'orelay_media_received_bytes_total{kind="audio"}', 'orelay_media_sent_bytes_total{kind="audio"}',
                  'orelay_datagrams_received_total', 'orelay_datagrams_sent_total',
                  'orelay_joins_total{result="admitted"}', 'orelay_join_duration_seconds_count',
                  'orelay_meeting_participants_count', 'orelay_subscriber_queue_depth_bytes_count']
        values = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1]
                  for line in relay_text.splitlines() if line and not line.startswith("#")}
        still = [m for m in moving if float(values.get(m, "0")) <= 0]
        check(not still, "the relay's traffic counters all moved" + ("" if not still else ": zero " + ", ".join(still)))
        for who, text in (("relay", relay_text), ("loadgen", loadgen_text)):
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
            check(r.returncode == 0 and not (r.stdout + r.stderr).strip(),
                  f"promtool check metrics on a busy {who} scrape reports nothing {r.stdout}{r.stderr}".rstrip())

        rules = poll("rules loaded and evaluated", lambda: (lambda groups: groups if groups and all(
            r.get("health") != "unknown" for g in groups for r in g["rules"]) else None)(
            json.loads(http_get(f"{base}/api/v1/rules")[1] or "{}").get("data", {}).get("groups")), deadline)
        all_rules = [r for g in rules for r in g["rules"]]
        bad = [f"{r['name']}: {r.get('lastError')}" for r in all_rules if r.get("health") != "ok"]
        check(not bad, f"{len(all_rules)} rules loaded and evaluate healthy" + ("" if not bad else ": " + "; ".join(bad)))
        recorded = {r["name"] for r in all_rules if r["type"] == "recording"}

        print("== every metric a panel or rule uses is exported")
        exported = exported_names(relay_text) | exported_names(loadgen_text) | PROMETHEUS_OWN
        unknown = {}
        for label, q in queries + [(f"rule {r['name']}", r["query"]) for r in all_rules]:
            for n in metric_names(q):
                if (":" in n and n not in recorded) or (":" not in n and n not in exported):
                    unknown.setdefault(n, []).append(label)
        check(not unknown, "all metric names are exported" + "".join(
            f"\n       unknown {n} (in {', '.join(sorted(set(w))[:3])})" for n, w in sorted(unknown.items())))

        print("== every panel and recording rule returns data from Prometheus")
        pending = dict(queries)
        for r in all_rules:
            if r["type"] == "recording":
                pending[f"rule {r['name']} (expression)"] = r["query"]
                pending[f"rule {r['name']} (recorded series)"] = r["name"]
        total = len(pending)
        errors = {}
        while pending and time.monotonic() < deadline:
            for label, q in list(pending.items()):
                result, err = prom_query(base, q)
                if err:
                    errors[label] = err
                elif result:
                    del pending[label]
            if pending:
                time.sleep(0.5)  # poll interval; the loop ends when every query has data
        check(not pending, f"{total - len(pending)}/{total} queries return non-empty results" + "".join(
            f"\n       empty: {label}: {pending[label]} {errors.get(label, '')}" for label in sorted(pending)))

        # Last, because it puts 127.0.0.1 into back-off: joins with tokens from a key
        # the relay does not know are rejected, then throttled, and both are counted.
        print("== admission: tokens from an unknown key are rejected, then throttled")
        def value(text, series):
            m = re.search(r"^" + re.escape(series) + r" (\S+)$", text, re.M)
            return float(m.group(1)) if m else 0.0
        admitted_before = value(http_get(f"http://{relay_metrics}/metrics")[1], 'orelay_joins_total{result="admitted"}')
        rogue_key, _ = issuer_key(relay_bin, tmp, "rogue.key")
        subprocess.run([str(loadgen_bin), "run", "--relay", quic, "--cert-fingerprint", fingerprint,
                        "--token-key", str(rogue_key), "--meetings", "1", "--participants", "8",
                        "--join-window", "1", "--duration", "1"],
                       capture_output=True, text=True, timeout=120)

        def admission_counted():
            _, text = http_get(f"http://{relay_metrics}/metrics")
            invalid = value(text, 'orelay_joins_total{result="token_invalid"}')
            throttled = value(text, 'orelay_joins_total{result="throttled"}') + \
                value(text, 'orelay_connections_refused_total{reason="backoff"}')
            admitted = value(text, 'orelay_joins_total{result="admitted"}')
            return (invalid, throttled, admitted) if invalid >= 1 and throttled >= 1 else None
        counted = poll("token_invalid and throttled joins counted", admission_counted, time.monotonic() + 60)
        check(counted[2] == admitted_before,
              f"a loadgen with an unknown signing key got no participant in: {counted[0]:.0f} joins rejected "
              f"TOKEN_INVALID, {counted[1]:.0f} throttled or refused in back-off, admitted "
              f"{admitted_before:.0f} -> {counted[2]:.0f}")
        return total - len(pending)
    finally:
        for p in reversed(procs):
            p.stop()


def main():
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: install Debian's prometheus package")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orelay-obs-") as tmp:
        tmp = pathlib.Path(tmp)
        boards = load_boards()
        queries = structural(boards)
        promtool_parse(queries, tmp)
        live(queries, tmp)
    print(f"{len(queries)} panel queries checked in {time.monotonic() - started:.0f} s")
    print(f"observability: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
