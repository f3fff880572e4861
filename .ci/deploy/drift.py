#!/usr/bin/env python3
"""The chart and the binary cannot drift.

  drift.py RENDERED BINARY

Takes the chart rendered with values whose secrets point at the local PostgreSQL
and Redis (charts/retail-suite/ci/default-values.yaml), then:

1. creates each service's database empty (services without a database have no
   migration Job and no database URL), runs each migration Job's command
   (`retail-suite migrate <service>`) with the Job's environment, and checks that
   it applied the migrations;
2. runs each Deployment's command (`retail-suite serve <service>`) with the
   Deployment's environment (its ConfigMap, its Secret references resolved from the
   rendered Secret; the rendered Service names are resolved to 127.0.0.1, as
   cluster DNS would resolve them to the Services), and waits for SERVING on
   grpc.health.v1, where the readiness probe asks; a service without a gRPC port
   (the gateway) is waited for as its HTTP readiness probe asks: GET of its health
   path on its HTTP port answering 200;
3. scrapes each service's metrics port, where the ServiceMonitor points (HTTP-only
   services without one are skipped);
4. sends SIGTERM, callers first, and expects each to exit 0 within its
   terminationGracePeriodSeconds.

Disabled services are not rendered, so they are not run.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

COMPONENT = "app.kubernetes.io/component"
PG = {"PGPASSWORD": "postgres", "PATH": os.environ.get("PATH", "")}


def psql(sql, database="postgres"):
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env=PG,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def environment(container, configmaps, secret, services):
    """The container's environment as the kubelet would give it."""
    env = {}
    for ref in container.get("envFrom", []):
        env.update(configmaps[ref["configMapRef"]["name"]])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["name"] != secret["metadata"]["name"]:
                sys.exit(f"{e['name']} refers to a Secret not rendered: {ref['name']}")
            value = secret["stringData"].get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                sys.exit(f"{e['name']} refers to a key not in the Secret: {ref['key']}")
            env[e["name"]] = value
    # Cluster DNS: a rendered Service's name resolves to that Service.
    pattern = re.compile(r"//(" + "|".join(re.escape(s) for s in services) + r"):")
    return {k: pattern.sub("//127.0.0.1:", str(v)) for k, v in env.items()}


def health(port):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status


def http_health(port, path):
    """The status of GET <path> on the HTTP port, as the kubelet's httpGet probe asks."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def login(port, username, password):
    """IdentityService/Login, encoded by hand (LoginRequest: 1 username, 2 password)."""

    def field(number, text):
        data = text.encode()
        return bytes([number << 3 | 2, len(data)]) + data

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/retail.identity.v1.IdentityService/Login",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            answer = call(field(1, username) + field(2, password), timeout=10)
        except grpc.RpcError as err:
            sys.exit(f"identity: the admin could not log in: {err.code()} {err.details()}")
    if not answer:
        sys.exit("identity: Login answered nothing")


def main(rendered_path, binary):
    with open(rendered_path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    secret = next(d for d in docs if d["kind"] == "Secret")
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    services = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"]
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    jobs = [d for d in docs if d["kind"] == "Job"]

    def has_database(d):
        container = d["spec"]["template"]["spec"]["containers"][0]
        return any(e["name"].endswith("__DATABASE__URL") for e in container.get("env", []))

    with_database = [d for d in deployments if has_database(d)]
    if not deployments or {j["metadata"]["labels"][COMPONENT] for j in jobs} != {d["metadata"]["labels"][COMPONENT] for d in with_database}:
        sys.exit(f"expected a migration Job per Deployment with a database: {len(jobs)} jobs, {len(with_database)} such deployments")
    base_env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir()}
    work = tempfile.mkdtemp(prefix="retail-chart-drift-")

    # 1. Empty databases, migrated by the Jobs' commands.
    for key, url in secret["stringData"].items():
        if key.endswith("-database-url"):
            name = urllib.parse.urlparse(url).path.lstrip("/")
            psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            psql(f'CREATE DATABASE "{name}"')
    for job in jobs:
        component = job["metadata"]["labels"][COMPONENT]
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = dict(base_env, **environment(container, configmaps, secret, services))
        run = subprocess.run([binary, *container["args"]], env=env, cwd=work, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            sys.exit(f"{component}: `{' '.join(container['args'])}` failed:\n{run.stdout}{run.stderr}")
        url = next(v for k, v in env.items() if k.endswith("__DATABASE__URL"))
        database = urllib.parse.urlparse(url).path.lstrip("/")
        tables = int(psql("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", database))
        applied = int(psql("SELECT count(*) FROM seaql_migrations", database))
        if tables < 2 or applied < 1:
            sys.exit(f"{component}: the migration Job's command left {database} with {tables} tables, {applied} migrations")
        print(f"migrated {component}: {applied} migrations, {tables} tables in {database}")
    # Services without a database have no Job: their `migrate` must do nothing, so
    # that running it (as `up` or an operator might) with their settings succeeds.
    for d in deployments:
        if has_database(d):
            continue
        component = d["metadata"]["labels"][COMPONENT]
        container = d["spec"]["template"]["spec"]["containers"][0]
        args = ["migrate", *container["args"][1:]]
        env = dict(base_env, **environment(container, configmaps, secret, services))
        run = subprocess.run([binary, *args], env=env, cwd=work, capture_output=True, text=True, timeout=60)
        if run.returncode != 0:
            sys.exit(f"{component}: `{' '.join(args)}` (no database, no Job) failed:\n{run.stdout}{run.stderr}")
        print(f"{component}: no database; `retail-suite {' '.join(args)}` does nothing")
    if os.listdir(work):
        sys.exit(f"the migrations wrote files where they ran: {os.listdir(work)}")

    # 2. Each Deployment's command, services called by others first.
    def calls(d):
        cm = d["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"]
        return sum(1 for v in configmaps[cm].values() if re.match(r"^https?://", str(v)))

    running = []
    try:
        for d in sorted(deployments, key=calls):
            component = d["metadata"]["labels"][COMPONENT]
            container = d["spec"]["template"]["spec"]["containers"][0]
            if container.get("command"):
                sys.exit(f"{component}: the chart overrides the image's entrypoint")
            env = dict(base_env, **environment(container, configmaps, secret, services))
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            probe = container.get("readinessProbe", {}).get("httpGet") if "grpc" not in ports else None
            if "grpc" not in ports and not probe:
                sys.exit(f"{component}: no gRPC port and no HTTP readiness probe")
            log = open(os.path.join(work, f"{component}.log"), "w", encoding="utf-8")
            process = subprocess.Popen([binary, *container["args"]], env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
            running.append((component, process, d, log))
            deadline = time.monotonic() + 60
            # The fixed ports lie in Linux's ephemeral range: a client socket (of an
            # earlier service, or of anything else on a busy machine) may hold one,
            # in TIME_WAIT for up to 60 s after it closed. Such a start is tried
            # again until that has passed.
            binds_until = time.monotonic() + 75
            while True:
                if process.poll() is not None:
                    output = open(log.name, encoding="utf-8").read()
                    if "Address already in use" in output and time.monotonic() < binds_until:
                        deadline = max(deadline, time.monotonic() + 60)
                        time.sleep(2)
                        log = open(log.name, "w", encoding="utf-8")
                        process = subprocess.Popen([binary, *container["args"]], env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
                        running[-1] = (component, process, d, log)
                        continue
                    sys.exit(f"{component} exited {process.returncode}:\n{output}")
                if probe:
                    if http_health(ports["http"], probe["path"]) == 200:
                        break
                else:
                    try:
                        if health(ports["grpc"]) == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                if time.monotonic() > deadline:
                    sys.exit(f"{component} did not become SERVING:\n{open(log.name, encoding='utf-8').read()}")
                time.sleep(0.2)
            if probe:
                print(f"{component}: `retail-suite {' '.join(container['args'])}` answers 200 on :{ports['http']}{probe['path']}")
            else:
                print(f"{component}: `retail-suite {' '.join(container['args'])}` is SERVING on :{ports['grpc']}")

        # The first admin, from the Secret's admin-password, logs in at identity.
        identity = next((d for _, _, d, _ in running if d["metadata"]["labels"][COMPONENT] == "identity"), None)
        password = secret["stringData"].get("admin-password")
        if identity and password:
            port = next(p["containerPort"] for p in identity["spec"]["template"]["spec"]["containers"][0]["ports"] if p["name"] == "grpc")
            login(port, "admin", password)
            print(f"identity: the admin logs in with the Secret's admin-password on :{port}")

        # 3. The metrics port the ServiceMonitor scrapes.
        for component, process, d, _ in running:
            container = d["spec"]["template"]["spec"]["containers"][0]
            port = next((p["containerPort"] for p in container["ports"] if p["name"] == "metrics"), None)
            if port is None:
                print(f"{component}: no metrics port")
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                text = answer.read().decode()
            if 'retail_rpc_server_requests_total{grpc_service="grpc.health.v1.Health"' not in text:
                sys.exit(f"{component}: :{port}/metrics lacks the RPC metrics:\n{text[:2000]}")
            print(f"{component}: metrics on :{port}/metrics")
    finally:
        # 4. SIGTERM, callers first; each stops within its termination grace.
        failures = []
        for component, process, d, log in reversed(running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                grace = d["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    failures.append(f"{component} did not stop within {grace} s of SIGTERM")
                    continue
                if process.returncode != 0:
                    failures.append(f"{component} exited {process.returncode} after SIGTERM:\n{open(log.name, encoding='utf-8').read()}")
            log.close()
        if failures:
            sys.exit("\n".join(failures))
    print(f"drift: {len(deployments)} services ran as rendered")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
