#!/usr/bin/env python3
"""Checks of the chart's rendered manifests.

  rendered.py validate FILE...     every document against the Kubernetes API schemas
                                   (strict), CRD kinds against .ci/deploy/crd-schemas
  rendered.py invariants FILE...   what every workload must have (probes, security
                                   context, resources, PDB, HPA, NetworkPolicy
                                   allow-lists, migration hook, ...)
  rendered.py selftest FILE        the invariants fail on broken copies of FILE: a
                                   service added with only a Deployment, a probe
                                   removed, a caller let through, root allowed

The invariants are checked for every Deployment found, so a service added to the
chart without them fails here.
"""

import json
import pathlib
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
HERE = pathlib.Path(__file__).resolve().parent
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "crd-schemas/servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): HERE / "crd-schemas/prometheusrule.json",
}
COMPONENT = "app.kubernetes.io/component"


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def validate(paths):
    failures = []
    for path in paths:
        for doc in load(path):
            what = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
            try:
                if crd:
                    jsonschema.validate(doc, json.loads(crd.read_text()))
                else:
                    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as err:
                failures.append(f"{what}: {getattr(err, 'message', err)} at {list(getattr(err, 'path', []))}")
            except kubernetes_validate.SchemaNotFoundError as err:
                failures.append(f"{what}: no schema ({err}); add one to .ci/deploy/crd-schemas")
    return failures


class Rendered:
    def __init__(self, docs):
        self.docs = docs

    def of(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind, component):
        found = [d for d in self.of(kind) if d["metadata"].get("labels", {}).get(COMPONENT) == component]
        return found

    def named(self, kind, name):
        return next((d for d in self.of(kind) if d["metadata"]["name"] == name), None)


def invariants(path):
    rendered = Rendered(load(path))
    failures = []
    deployments = rendered.of("Deployment")
    if not deployments:
        return [f"{path}: no Deployment rendered"]
    services_by_name = {s["metadata"]["name"]: s for s in rendered.of("Service")}
    components = {d["metadata"]["labels"][COMPONENT] for d in deployments}
    secret = next(iter(rendered.of("Secret")), None)
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in rendered.of("ConfigMap")}
    components_with_metrics = {
        d["metadata"]["labels"][COMPONENT]
        for d in deployments
        if any(p["name"] == "metrics" for p in d["spec"]["template"]["spec"]["containers"][0].get("ports", []))
    }

    def fail(component, message):
        failures.append(f"{path}: {component}: {message}")

    # Which rendered Service each component's settings point at: the callers.
    callers = {c: set() for c in components}
    for d in deployments:
        caller = d["metadata"]["labels"][COMPONENT]
        container = d["spec"]["template"]["spec"]["containers"][0]
        for ref in container.get("envFrom", []):
            for value in configmaps.get(ref["configMapRef"]["name"], {}).values():
                m = re.match(r"^https?://([^:/]+)", str(value))
                if m and m.group(1) in services_by_name:
                    callee = services_by_name[m.group(1)]["metadata"]["labels"][COMPONENT]
                    if callee != caller and callee in callers:
                        callers[callee].add(caller)

    for d in deployments:
        c = d["metadata"]["labels"][COMPONENT]
        pod = d["spec"]["template"]["spec"]
        containers = pod["containers"]
        if len(containers) != 1:
            fail(c, "expected one container")
            continue
        container = containers[0]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        # gRPC services serve metrics beside it; HTTP-only ones (the gateway) have
        # an http port and may lack a metrics port.
        if not ("grpc" in ports and "metrics" in ports) and "http" not in ports:
            fail(c, f"container ports must include grpc and metrics, or http, has {sorted(ports)}")
            continue
        listener = "grpc" if "grpc" in ports else "http"

        # The command: the image's entrypoint with `serve <service>`.
        args = container.get("args", [])
        if container.get("command") or len(args) != 2 or args[0] != "serve":
            fail(c, f"must run `retail-suite serve <service>`, runs command={container.get('command')} args={args}")

        # Probes: native gRPC on the gRPC port; without one, GET of a health path
        # on the HTTP port.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container.get(probe, {})
            if listener == "grpc":
                grpc = spec.get("grpc")
                if not grpc or grpc.get("port") != ports["grpc"]:
                    fail(c, f"{probe} must be a gRPC probe on port {ports['grpc']}")
            else:
                get = spec.get("httpGet")
                if not get or get.get("port") not in ("http", ports["http"]) or not str(get.get("path", "")).startswith("/"):
                    fail(c, f"{probe} must be an HTTP GET of a health path on port http")
                if {"grpc", "tcpSocket", "exec"} & set(spec):
                    fail(c, f"{probe} must be an HTTP probe only")

        # Security contexts.
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(c, "pod securityContext must set runAsNonRoot and seccomp RuntimeDefault")
        if not psc.get("runAsUser"):
            fail(c, "pod securityContext must set a non-zero runAsUser")
        csc = container.get("securityContext", {})
        expected = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True, "privileged": False}
        for key, value in expected.items():
            if csc.get(key) is not value:
                fail(c, f"container securityContext.{key} must be {value}")
        if csc.get("capabilities", {}).get("drop") != ["ALL"] or csc.get("capabilities", {}).get("add"):
            fail(c, "container must drop ALL capabilities and add none")
        if pod.get("automountServiceAccountToken") is not False:
            fail(c, "must not mount a service account token")
        if pod.get("serviceAccountName") not in {s["metadata"]["name"] for s in rendered.one("ServiceAccount", c)}:
            fail(c, "must run as its own ServiceAccount")

        # Resources.
        res = container.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
            fail(c, "must request cpu and memory")
        if not res.get("limits", {}).get("memory"):
            fail(c, "must limit memory")

        # Topology spread over zones and nodes.
        keys = {t.get("topologyKey") for t in pod.get("topologySpreadConstraints", [])}
        if not {"topology.kubernetes.io/zone", "kubernetes.io/hostname"} <= keys:
            fail(c, "must spread over zones and nodes")

        # Settings: ports as the container's, and a termination grace longer than
        # the drain grace plus the drain timeout.
        env = {}
        for ref in container.get("envFrom", []):
            env.update(configmaps.get(ref["configMapRef"]["name"], {}))
        prefix = next((k.split("__")[0] for k in env if k.endswith("__SERVER__PORT")), None)
        if not prefix:
            fail(c, "its ConfigMap must set server.port")
            continue
        if int(env[f"{prefix}__SERVER__PORT"]) != ports[listener]:
            fail(c, f"server.port differs from the {listener} container port")
        if int(env.get(f"{prefix}__SERVER__METRICS_PORT", -1)) != ports.get("metrics", -1):
            fail(c, "server.metrics_port differs from the metrics container port")
        if env.get(f"{prefix}__SERVER__HOST") != "0.0.0.0":
            fail(c, "server.host must be 0.0.0.0 to be reachable in the pod")
        # A database: its URL from the Secret. Without one, no database settings at
        # all (the services refuse unknown settings) and no migration Job.
        has_database = any(e["name"] == f"{prefix}__DATABASE__URL" for e in container.get("env", []))
        if has_database and env.get(f"{prefix}__DATABASE__MIGRATE_ON_START") != "false":
            fail(c, "database.migrate_on_start must be false (the hook Job migrates)")
        if not has_database and any(k.startswith(f"{prefix}__DATABASE__") for k in env):
            fail(c, "has database settings but no database.url")
        grace_ms = int(env.get(f"{prefix}__SERVER__DRAIN_GRACE_MS", 0))
        drain_ms = int(env.get(f"{prefix}__SERVER__DRAIN_TIMEOUT_MS", 20000))
        if grace_ms <= 0:
            fail(c, "server.drain_grace_ms must be positive so readiness sees NOT_SERVING")
        if pod.get("terminationGracePeriodSeconds", 30) * 1000 <= grace_ms + drain_ms:
            fail(c, f"terminationGracePeriodSeconds must exceed drain grace + drain timeout ({grace_ms + drain_ms} ms)")
        readiness = container.get("readinessProbe", {})
        if readiness.get("periodSeconds", 10) * readiness.get("failureThreshold", 3) * 1000 >= grace_ms:
            fail(c, "the readiness probe must see NOT_SERVING within the drain grace")

        # Secrets: every key referenced exists in the rendered Secret.
        for e in container.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and secret and ref["name"] == secret["metadata"]["name"] and not ref.get("optional"):
                if ref["key"] not in secret.get("stringData", {}):
                    fail(c, f"secret key {ref['key']} is not in the Secret")

        # Service with the container's ports (gRPC and metrics, or HTTP).
        svcs = rendered.one("Service", c)
        if len(svcs) != 1:
            fail(c, "needs one Service")
        else:
            sports = {p["name"]: p for p in svcs[0]["spec"]["ports"]}
            if {n: p.get("targetPort") for n, p in sports.items()} != {n: n for n in ports}:
                fail(c, f"its Service must expose the container's ports {sorted(ports)}, exposes {sorted(sports)}")
            if svcs[0]["spec"]["selector"] != d["spec"]["selector"]["matchLabels"]:
                fail(c, "its Service must select its pods")

        # PDB, HPA (or fixed replicas), NetworkPolicy.
        pdbs = rendered.one("PodDisruptionBudget", c)
        if len(pdbs) != 1 or pdbs[0]["spec"]["selector"]["matchLabels"] != d["spec"]["selector"]["matchLabels"]:
            fail(c, "needs a PodDisruptionBudget selecting its pods")
        hpas = rendered.one("HorizontalPodAutoscaler", c)
        if hpas:
            hpa = hpas[0]["spec"]
            kinds = {m["resource"]["name"] for m in hpa.get("metrics", []) if m["type"] == "Resource"}
            if kinds != {"cpu", "memory"} or hpa["scaleTargetRef"]["name"] != d["metadata"]["name"]:
                fail(c, "its HPA must scale its Deployment on cpu and memory")
            if "replicas" in d["spec"]:
                fail(c, "with an HPA the Deployment must not set replicas")
        elif not d["spec"].get("replicas"):
            fail(c, "needs an HPA or a replica count")
        if pdbs and not hpas and d["spec"].get("replicas", 1) <= pdbs[0]["spec"].get("minAvailable", 0):
            fail(c, "minAvailable leaves no pod to evict")

        nps = rendered.one("NetworkPolicy", c)
        if len(nps) != 1:
            fail(c, "needs a NetworkPolicy")
        else:
            np = nps[0]["spec"]
            if np["podSelector"]["matchLabels"] != d["spec"]["selector"]["matchLabels"] or np.get("policyTypes") != ["Ingress"]:
                fail(c, "its NetworkPolicy must select its pods and restrict ingress")
            allowed = set()
            for rule in np.get("ingress", []):
                rule_ports = {p["port"] for p in rule.get("ports", [])}
                if not rule_ports:
                    fail(c, "a NetworkPolicy rule without ports lets everything in")
                if not rule.get("from"):
                    fail(c, "a NetworkPolicy rule without peers lets everyone in")
                if "grpc" in rule_ports or ("http" in rule_ports and listener == "http"):
                    for peer in rule.get("from", []):
                        labels = peer.get("podSelector", {}).get("matchLabels", {})
                        if COMPONENT in labels:
                            allowed.add(labels[COMPONENT])
            if allowed != callers[c]:
                fail(c, f"NetworkPolicy lets {sorted(allowed)} call it; its callers are {sorted(callers[c])}")

        # The migration Job: a pre-install/pre-upgrade hook running `migrate <service>`.
        jobs = [j for j in rendered.one("Job", c)]
        if not has_database:
            if jobs:
                fail(c, "has no database but a migration Job")
        elif len(jobs) != 1:
            fail(c, "needs one migration Job")
        else:
            job = jobs[0]
            hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
            if hooks != {"pre-install", "pre-upgrade"}:
                fail(c, "its migration Job must be a pre-install,pre-upgrade hook")
            jc = job["spec"]["template"]["spec"]["containers"][0]
            if jc.get("args") != ["migrate", args[1] if len(args) == 2 else None]:
                fail(c, f"its migration Job must run `migrate {args[1:]}`")
            if jc.get("securityContext") != container.get("securityContext"):
                fail(c, "its migration Job must run as hardened as the service")
            if job["spec"]["template"]["spec"].get("securityContext") != psc:
                fail(c, "its migration Job's pod must run as hardened as the service's")

    if secret:
        hooks = set(secret["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
        if hooks != {"pre-install", "pre-upgrade"}:
            failures.append(f"{path}: the created Secret must exist before the migration hook runs")

    # Monitoring: one ServiceMonitor per service, on the metrics port.
    monitors = rendered.of("ServiceMonitor")
    if monitors:
        for c in components_with_metrics:
            ms = rendered.one("ServiceMonitor", c)
            if len(ms) != 1 or ms[0]["spec"]["endpoints"][0].get("port") != "metrics" or ms[0]["spec"]["endpoints"][0].get("path") != "/metrics":
                failures.append(f"{path}: {c}: needs a ServiceMonitor on port metrics, /metrics")
    for rule in rendered.of("PrometheusRule"):
        alerts = {r.get("alert") for g in rule["spec"]["groups"] for r in g["rules"]}
        for needed in ("RetailRpcErrorRatioHigh", "RetailRpcLatencyHigh", "RetailEventConsumerLagging"):
            if needed not in alerts:
                failures.append(f"{path}: PrometheusRule lacks {needed}")

    # Ingress only to HTTP ports of rendered Services.
    for ing in rendered.of("Ingress"):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                backend = p["backend"]["service"]
                svc = services_by_name.get(backend["name"])
                if not svc or backend["port"].get("name") not in {sp["name"] for sp in svc["spec"]["ports"]}:
                    failures.append(f"{path}: Ingress {ing['metadata']['name']} points at no Service port")
    return failures


def selftest(path):
    """Each broken copy of the rendering must fail the invariants, naming why."""
    import copy
    import tempfile

    docs = load(path)

    def deployment(d, component):
        return d["kind"] == "Deployment" and d["metadata"]["labels"][COMPONENT] == component

    def new_service(docs):
        d = copy.deepcopy(next(x for x in docs if deployment(x, "catalog")))
        d["metadata"]["name"] += "-new"
        for labels in (d["metadata"]["labels"], d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]):
            labels[COMPONENT] = "new"
        docs.append(d)

    def no_readiness(docs):
        next(x for x in docs if deployment(x, "orders"))["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")

    def extra_caller(docs):
        np = next(x for x in docs if x["kind"] == "NetworkPolicy" and x["metadata"]["labels"][COMPONENT] == "catalog")
        peer = copy.deepcopy(np["spec"]["ingress"][0]["from"][0])
        peer["podSelector"]["matchLabels"][COMPONENT] = "identity"
        np["spec"]["ingress"][0]["from"].append(peer)

    def root(docs):
        sc = next(x for x in docs if deployment(x, "identity"))["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        sc["runAsNonRoot"] = False

    def short_termination(docs):
        next(x for x in docs if deployment(x, "membership"))["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10

    def no_hook(docs):
        job = next(x for x in docs if x["kind"] == "Job")
        job["metadata"]["annotations"].pop("helm.sh/hook")

    def http_probe_to_tcp(docs):
        container = next(x for x in docs if deployment(x, "gateway"))["spec"]["template"]["spec"]["containers"][0]
        container["livenessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 10}

    def without_database_url(docs, component):
        """The service's container as if it had no database: no database.url."""
        container = next(x for x in docs if deployment(x, component))["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [e for e in container.get("env", []) if not e["name"].endswith("__DATABASE__URL")]
        return container

    def database_settings_without_database(docs):
        container = without_database_url(docs, "gateway")
        cm = container["envFrom"][0]["configMapRef"]["name"]
        next(x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == cm)["data"]["RETAIL_GATEWAY__DATABASE__MAX_CONNECTIONS"] = "16"

    def migration_without_database(docs):
        # The gateway keeps its migration Job.
        without_database_url(docs, "gateway")

    def http_caller(docs):
        np = next(x for x in docs if x["kind"] == "NetworkPolicy" and x["metadata"]["labels"][COMPONENT] == "gateway")
        np["spec"]["ingress"] = [{"ports": [{"port": "http", "protocol": "TCP"}], "from": [{"podSelector": {"matchLabels": {COMPONENT: "membership"}}}]}]

    cases = {
        "a service with only a Deployment": (new_service, ["new: needs one Service", "new: needs a PodDisruptionBudget", "new: needs a NetworkPolicy", "new: needs one migration Job"]),
        "a readiness probe removed": (no_readiness, ["orders: readinessProbe"]),
        "a caller too many": (extra_caller, ["catalog: NetworkPolicy lets"]),
        "root allowed": (root, ["identity: container securityContext.runAsNonRoot"]),
        "a termination grace shorter than the drain": (short_termination, ["membership: terminationGracePeriodSeconds"]),
        "a migration Job without its hook": (no_hook, ["migration Job must be a pre-install,pre-upgrade hook"]),
        "an HTTP-only service probed on TCP": (http_probe_to_tcp, ["gateway: livenessProbe must be an HTTP GET"]),
        "database settings on a service without a database": (database_settings_without_database, ["gateway: has database settings"]),
        "a migration Job of a service without a database": (migration_without_database, ["gateway: has no database but a migration Job"]),
        "a suite service let through to an HTTP-only service": (http_caller, ["gateway: NetworkPolicy lets ['membership']"]),
    }
    problems = []
    if invariants(path):
        problems.append(f"{path} itself fails the invariants")
    for what, (breaker, expected) in cases.items():
        broken = copy.deepcopy(docs)
        breaker(broken)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump_all(broken, f)
        found = invariants(f.name)
        pathlib.Path(f.name).unlink()
        for needle in expected:
            if not any(needle in line for line in found):
                problems.append(f"{what}: expected a failure with {needle!r}, got {found}")
    return problems


def main(argv):
    if len(argv) < 3 or argv[1] not in ("validate", "invariants", "selftest"):
        sys.exit(__doc__)
    if argv[1] == "validate":
        failures = validate(argv[2:])
    elif argv[1] == "selftest":
        failures = selftest(argv[2])
    else:
        failures = [f for path in argv[2:] for f in invariants(path)]
    for f in failures:
        print(f, file=sys.stderr)
    if failures:
        sys.exit(f"{len(failures)} problem(s)")
    print(f"{argv[1]}: {len(argv) - 2} rendering(s) pass")


if __name__ == "__main__":
    main(sys.argv)
