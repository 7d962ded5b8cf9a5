"""deploy/k8s: every overlay, component and the example site renders with `kubectl kustomize`,
every rendered object validates against Kubernetes' schemas (kubernetes-validate), and the
objects say what matters: probes, a grace longer than the drain, the autoscaler's metrics and
behaviour, the disruption budget, each overlay's channel layer, credentials only in the Secret,
and the Ingress's refusals.

The checks are functions of the rendered objects, so that test_each_check_catches_its_part_gone
can take each part away and see its check fail. No cluster is needed; kubectl is.
"""

import copy
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tracking import devices, drain, health, relay

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"

# Schemas every object must meet: Kubernetes 1.35, the oldest minor release still maintained
# upstream and the floor these manifests claim, and 1.37, the newest kubernetes-validate (pinned in
# requirements.in) knows. Everything used is GA in both: apps/v1, batch/v1 (CronJob timeZone),
# policy/v1 (unhealthyPodEvictionPolicy), autoscaling/v2, networking.k8s.io/v1.
KUBERNETES_VERSIONS = ("1.35", "1.37")
OVERLAYS = {"redis": "redis", "kafka": "kafka"}  # overlay -> its CHANNEL_LAYER
COMPONENTS = ("servicemonitor", "networkpolicy", "keda")
# Custom resources: no schema in kubernetes-validate. Their metadata is validated (as a
# ConfigMap's), their specs by the checks of their tests below.
CUSTOM_API_GROUPS = ("monitoring.coreos.com/", "keda.sh/")

CREDENTIALS = ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "KAFKA_CLIENT_CONFIG")
SOCKETS_METRIC = "teamtrack_open_sockets"
WEB = "teamtrack-web"
# /readyz runs its checks one after the other: the database, the channel layer, the relay state.
READYZ_CHECKS = 3
# Time for daphne to stop after the drain hands SIGTERM back (it cancels what is left), and slack.
EXIT_MARGIN = 10.0
# A URL with credentials in it (user:password@), or a token or password handed over in one.
URL_CREDENTIALS = re.compile(r"://[^/\s@]*@|[?&](token|id|password|key)=", re.IGNORECASE)
FAKE_PASSWORD = "fake-password-Zq8w"  # written into the example site's secret.env by the tests


# ------------------------------------------------------------ rendering


def kustomize(directory: Path) -> list[dict]:
    """Render a kustomization with kubectl; fail (never skip) when kubectl is missing."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl not found: tests/test_k8s.py renders deploy/k8s with `kubectl kustomize`. "
            "Install kubectl (1.27 or later), e.g. from https://kubernetes.io/docs/tasks/tools/."
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory) -> Path:
    """deploy/k8s copied, with the example site's secret.env written (as an operator would), and
    a kustomization per component over the Redis overlay (kustomize refuses absolute paths)."""
    copied = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copied)
    (copied / "site" / "secret.env").write_text(
        f"SECRET_KEY={'s3cr3t-' * 8}\n"
        f"DATABASE_URL=postgres://teamtrack:{FAKE_PASSWORD}@db.example.net:5432/teamtrack\n"
        f"REDIS_URL=rediss://:{FAKE_PASSWORD}@redis.example.net:6379/0\n"
        f'KAFKA_CLIENT_CONFIG={{"sasl.password": "{FAKE_PASSWORD}"}}\n'
    )
    for component in COMPONENTS:
        directory = copied / f"with-{component}"
        directory.mkdir()
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": "teamtrack",
            "resources": ["../overlays/redis"],
            "components": [f"../components/{component}"],
        }
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return copied


@pytest.fixture(scope="module")
def with_component(k8s_copy) -> dict[str, list[dict]]:
    return {component: kustomize(k8s_copy / f"with-{component}") for component in COMPONENTS}


@pytest.fixture(scope="module")
def site(k8s_copy) -> list[dict]:
    return kustomize(k8s_copy / "site")


def helm_values(name: str) -> dict:
    return yaml.safe_load((K8S / name / "values.yaml").read_text())


# ------------------------------------------------------------ finding things


def objects(rendered: list[dict], kind: str) -> list[dict]:
    return [o for o in rendered if o["kind"] == kind]


def one(rendered: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects(rendered, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(rendered: list[dict]) -> dict[str, dict]:
    """Every pod template's spec, by the name of the object holding it."""
    specs = {}
    for o in rendered:
        if o["kind"] in ("Deployment", "Job"):
            specs[o["metadata"]["name"]] = o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            specs[o["metadata"]["name"]] = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def web_container(rendered: list[dict]) -> dict:
    (container,) = one(rendered, "Deployment", WEB)["spec"]["template"]["spec"]["containers"]
    return container


def config(rendered: list[dict]) -> dict[str, str]:
    return one(rendered, "ConfigMap")["data"]


def strings(value) -> list[str]:
    """Every string in a nested structure, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return []


def ingress_paths(rendered: list[dict]) -> dict[str, tuple[str, dict]]:
    """Each Ingress path -> (its pathType, its Ingress's annotations)."""
    paths = {}
    for ingress in objects(rendered, "Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["path"] not in paths, f"{path['path']} is routed twice"
                paths[path["path"]] = (path["pathType"], annotations)
    return paths


def nginx(annotations: dict, name: str) -> str | None:
    return annotations.get(f"nginx.ingress.kubernetes.io/{name}")


def timeout(annotations: dict, name: str) -> int:
    """An ingress-nginx timeout in seconds; its default (60 s) when not set."""
    return int(nginx(annotations, name) or 60)


def dockerfile_cmd() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (cmd,) = re.findall(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    return json.loads(cmd)


def drain_budget() -> float:
    """What a draining replica may take after SIGTERM, from the code (tracking/relay.py
    Relay.drain): a tick already under way, the drain's own tick's hand-off, storing what
    devices sent, the closes' grace."""
    return 2 * devices.STEP_TIMEOUT + relay.DRAIN_STORE_TIMEOUT + drain.CLOSE_GRACE


# ------------------------------------------------------------ the checks


def check_probes(rendered: list[dict]) -> None:
    container = web_container(rendered)
    ready, live = container.get("readinessProbe"), container.get("livenessProbe")
    assert ready and live, "the web container needs a readiness and a liveness probe"
    assert ready["httpGet"]["path"] == "/readyz"
    # Liveness must not fail on a Redis or database outage (the relay heals without restarts):
    # /healthz asks nothing of them.
    assert live["httpGet"]["path"] == "/healthz"
    (port,) = container["ports"]
    for probe in (ready, live):
        assert probe["httpGet"]["port"] in (port["name"], port["containerPort"])
    assert ready["timeoutSeconds"] > READYZ_CHECKS * health.CHECK_TIMEOUT, (
        "a slow but healthy /readyz (its checks one after the other) must not time out"
    )
    # The probes call the pod by its address: Django must allow that host (deployment.yaml).
    env = {e["name"]: e for e in container.get("env", [])}
    assert "POD_IP" in env and "ALLOWED_HOSTS" in env, "add the pod's address to ALLOWED_HOSTS"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "$(POD_IP)" in env["ALLOWED_HOSTS"]["value"].split(",")
    assert "$(ALLOWED_HOSTS)" in env["ALLOWED_HOSTS"]["value"].split(",")
    service = one(rendered, "Service", WEB)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]


def check_drain_time(rendered: list[dict]) -> None:
    spec = one(rendered, "Deployment", WEB)["spec"]["template"]["spec"]
    pre_stop = web_container(rendered).get("lifecycle", {}).get("preStop")
    assert pre_stop, "a preStop lets ingress-nginx stop sending new sockets before SIGTERM"
    sleep, seconds = pre_stop["exec"]["command"]
    assert sleep == "sleep" and float(seconds) >= 3
    grace = spec.get("terminationGracePeriodSeconds", 30)
    needed = float(seconds) + drain_budget() + EXIT_MARGIN
    assert grace >= needed, f"grace {grace} s, but preStop + drain + exit take up to {needed} s"


def check_hpa(rendered: list[dict]) -> None:
    deployment = one(rendered, "Deployment", WEB)
    assert "replicas" not in deployment["spec"], "the HPA owns the count; apply would reset it"
    hpa = one(rendered, "HorizontalPodAutoscaler", WEB)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": WEB,
    }
    assert hpa["spec"]["minReplicas"] >= 2, "a drained pod's sockets need somewhere to go"
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert sorted(metrics) == ["Pods", "Resource"], "open sockets per pod, and CPU"
    sockets = metrics["Pods"]["pods"]
    assert sockets["metric"]["name"] == SOCKETS_METRIC
    assert sockets["target"]["type"] == "AverageValue"
    assert 0 < int(sockets["target"]["averageValue"]) <= 2000, "at most what a replica sustained"
    cpu = metrics["Resource"]["resource"]
    assert cpu["name"] == "cpu" and cpu["target"]["type"] == "Utilization"
    assert 0 < cpu["target"]["averageUtilization"] <= 80
    assert web_container(rendered)["resources"]["requests"]["cpu"], "Utilization needs a request"
    behavior = hpa["spec"]["behavior"]
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 0, "scale up at once"
    assert any(
        p["periodSeconds"] <= 30
        and (
            (p["type"] == "Percent" and p["value"] >= 100)
            or (p["type"] == "Pods" and p["value"] >= 4)
        )
        for p in up["policies"]
    ), "scale up fast: doubling, or 4 pods, within 30 s"
    assert up.get("selectPolicy", "Max") == "Max"
    assert down["stabilizationWindowSeconds"] >= 300, "scale down only after minutes of less load"
    assert down["policies"] and all(
        p["type"] == "Pods" and p["value"] == 1 and p["periodSeconds"] >= 60
        for p in down["policies"]
    ), "scale down one pod at a time, a minute or more apart"


def check_pdb(rendered: list[dict]) -> None:
    deployment = one(rendered, "Deployment", WEB)
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"], "the PDB covers the web pods"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1, "evict one web pod (one drain) at a time"


def check_layer(rendered: list[dict], layer: str) -> None:
    settings = config(rendered)
    assert settings.get("CHANNEL_LAYER") == layer
    assert settings.get("DEBUG") == "false"
    if layer == "kafka":
        assert settings.get("KAFKA_BOOTSTRAP_SERVERS")


def check_credentials(rendered: list[dict]) -> None:
    """Credentials only through Secret references: none in a ConfigMap, a literal environment
    variable, a command line, an annotation or a URL."""
    for configmap in objects(rendered, "ConfigMap"):
        leaked = set(configmap.get("data", {})) & set(CREDENTIALS)
        assert not leaked, f"{sorted(leaked)} belong in the Secret, not a ConfigMap"
    for o in rendered:
        if o["kind"] == "Secret":
            continue
        for text in strings(o):
            assert not URL_CREDENTIALS.search(text), f"a credential in {o['kind']}: {text!r}"
    for name, spec in pod_specs(rendered).items():
        for container in spec["containers"]:
            literal = {e["name"] for e in container.get("env", []) if "value" in e}
            assert not literal & set(CREDENTIALS), f"{name}: {literal & set(CREDENTIALS)}"
            sources = container.get("envFrom", [])
            assert any(
                s.get("secretRef", {}).get("name", "").startswith("teamtrack") for s in sources
            ), f"{name} takes its credentials from the Secret teamtrack"


def check_ingress(rendered: list[dict]) -> None:
    paths = ingress_paths(rendered)
    for ingress in objects(rendered, "Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        assert ingress["spec"]["ingressClassName"] == "nginx"
        assert not [a for a in annotations if a.endswith("-snippet")], "no snippet annotations"
        # compose's nginx takes nginx's default 1m (no client_max_body_size).
        assert nginx(annotations, "proxy-body-size") in (None, "1m")
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert "?" not in path["path"]
                assert path["backend"]["service"]["name"] == WEB
    # /metrics and /readyz are refused to everyone through the proxy (compose: 404).
    for path, path_type in (("/metrics", "Exact"), ("/metrics/", "Prefix"), ("/readyz", "Exact")):
        assert path in paths, f"{path} must have an Ingress that refuses it"
        found_type, annotations = paths[path]
        assert found_type == path_type
        denied = (nginx(annotations, "denylist-source-range") or "").replace(" ", "").split(",")
        assert {"0.0.0.0/0", "::/0"} <= set(denied), f"{path} is denied to every address"
    # Sockets: long-lived, unbuffered, and no access log (a client's token in the query string).
    path_type, sockets = paths["/ws/"]
    assert path_type == "Prefix"
    assert timeout(sockets, "proxy-read-timeout") >= 3600
    assert timeout(sockets, "proxy-send-timeout") >= 3600
    assert nginx(sockets, "proxy-buffering") == "off"
    assert nginx(sockets, "enable-access-log") == "false"
    # OsmAnd's token is in the query string by protocol: no access log.
    for path in ("/osmand", "/osmand/"):
        assert nginx(paths[path][1], "enable-access-log") == "false", path
    # Pages and exports: compose's hour-long timeouts.
    assert timeout(paths["/"][1], "proxy-read-timeout") >= 3600


def check_proxies(rendered: list[dict]) -> None:
    settings = config(rendered)
    for name in ("TRUSTED_PROXIES", "METRICS_ALLOWED_NETWORKS"):
        assert settings.get(name), f"{name} must name the cluster's networks"
        for network in settings[name].split(","):
            ipaddress.ip_network(network, strict=False)
    # Pods and the controller get addresses from any private range the network plugin uses
    # (192.168/16 on eksctl's and Calico's defaults, 100.64/10 on some): the kubelet's probes
    # and Prometheus come from the same ranges as the controller.
    trusted = {ipaddress.ip_network(n) for n in settings["TRUSTED_PROXIES"].split(",")}
    allowed = {ipaddress.ip_network(n) for n in settings["METRICS_ALLOWED_NETWORKS"].split(",")}
    assert trusted <= allowed, "the probes come from where the controller does"


def test_the_base_trusts_every_range_a_network_plugin_gives_pods():
    """A site narrows them to its own pod network (deploy/k8s/site); the base must work on any
    cluster, whichever private range its pods get."""
    settings = dict(
        line.split("=", 1)
        for line in (K8S / "base" / "settings.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for name in ("TRUSTED_PROXIES", "METRICS_ALLOWED_NETWORKS"):
        networks = {ipaddress.ip_network(n) for n in settings[name].split(",")}
        for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
            assert ipaddress.ip_network(private) in networks, (name, private)


def check_command(rendered: list[dict]) -> None:
    container = web_container(rendered)
    assert container["args"] == dockerfile_cmd(), "daphne runs as the Dockerfile runs it"
    command = " ".join(container.get("command", []))
    limit = re.search(r"ulimit -n (\d+) && exec \"\$@\"", command)
    assert limit, "raise the open-file limit, then exec daphne (it gets SIGTERM itself)"
    target = one(rendered, "HorizontalPodAutoscaler", WEB)["spec"]["metrics"][0]["pods"]
    assert int(limit.group(1)) >= 20 * int(target["target"]["averageValue"])


def check_scraping(rendered: list[dict]) -> None:
    template = one(rendered, "Deployment", WEB)["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/path") == "/metrics"
    (port,) = web_container(rendered)["ports"]
    assert annotations.get("prometheus.io/port") == str(port["containerPort"])


def check_jobs(rendered: list[dict]) -> None:
    migrate = pod_specs(rendered)["teamtrack-migrate"]["containers"][0]
    assert migrate["command"][-3:] == ["manage.py", "migrate", "--noinput"]
    cron = one(rendered, "CronJob", "teamtrack-prune-history")
    minute, hour, *every = cron["spec"]["schedule"].split()
    assert every == ["*", "*", "*"] and minute.isdigit() and hour.isdigit(), "once a day"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    prune = pod_specs(rendered)["teamtrack-prune-history"]["containers"][0]
    assert prune["command"][-2:] == ["manage.py", "prune_history"]


CHECKS = [
    check_probes,
    check_drain_time,
    check_hpa,
    check_pdb,
    check_credentials,
    check_ingress,
    check_proxies,
    check_command,
    check_scraping,
    check_jobs,
]


# ------------------------------------------------------------ the tests


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_the_whole_deployment(rendered, overlay):
    kinds = sorted(o["kind"] for o in rendered[overlay])
    assert kinds == sorted(
        [
            "Namespace",
            "ConfigMap",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Job",
            "CronJob",
            *["Ingress"] * 5,
        ]
    )
    namespaces = {
        o["metadata"].get("namespace") for o in rendered[overlay] if o["kind"] != "Namespace"
    }
    assert namespaces == {one(rendered[overlay], "Namespace")["metadata"]["name"]}


def validate(rendered: list[dict], version: str) -> None:
    for o in rendered:
        checked = o
        if o["apiVersion"].startswith(CUSTOM_API_GROUPS):
            checked = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": o["metadata"]}
        try:
            kubernetes_validate.validate(checked, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{o['kind']} {o['metadata']['name']} (Kubernetes {version}): {error}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_validates_against_the_kubernetes_schemas(rendered, overlay, version):
    validate(rendered[overlay], version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_components_and_the_example_site_validate(with_component, site, version):
    for component_rendered in with_component.values():
        validate(component_rendered, version)
    validate(site, version)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_passes(rendered, overlay, check):
    check(rendered[overlay])


@pytest.mark.parametrize("overlay, layer", OVERLAYS.items())
def test_each_overlay_runs_its_channel_layer(rendered, overlay, layer):
    check_layer(rendered[overlay], layer)


def test_kafka_requests_the_cpu_its_replicas_cost(rendered):
    def cpu(overlay):
        return int(web_container(rendered[overlay])["resources"]["requests"]["cpu"].rstrip("m"))

    # docs/performance.md: a replica on Kafka costs 1.18-1.20 times what it costs on Redis.
    assert cpu("kafka") >= 1.18 * cpu("redis")
    for overlay in OVERLAYS:
        assert "cpu" not in web_container(rendered[overlay])["resources"].get("limits", {}), (
            "no CPU limit: a CFS quota per 100 ms, the relay's window, would stall its ticks"
        )


def test_the_adapter_serves_the_metric_the_hpa_asks_for(rendered):
    values = helm_values("prometheus-adapter")
    assert values["rules"]["default"] is False
    (rule,) = values["rules"]["custom"]
    assert SOCKETS_METRIC in rule["seriesQuery"]
    assert rule["resources"]["overrides"]["pod"]["resource"] == "pod"
    assert rule["resources"]["overrides"]["namespace"]["resource"] == "namespace"
    assert re.fullmatch(rule["name"]["matches"], SOCKETS_METRIC)
    hpa = one(rendered["redis"], "HorizontalPodAutoscaler")
    assert rule["name"]["as"] == hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    # Both kinds (worker, manager) summed per pod: grouped by the pod, never by kind.
    query = rule["metricsQuery"]
    assert query.startswith("sum by (<<.GroupBy>>)") and "<<.LabelMatchers>>" in query


def test_the_controller_logs_no_query_string_and_keeps_the_client_address():
    values = helm_values("ingress-nginx")["controller"]
    log_format = values["config"]["log-format-upstream"]
    assert "$uri" in log_format
    for variable in (
        "$request ",
        '$request"',
        "$request_uri",
        "$args",
        "$query_string",
        "$arg_",
        "$http_referer",
    ):
        assert variable not in log_format, f"{variable} would log an OsmAnd token"
    assert values["config"]["error-log-level"] == "crit", "the error log quotes request lines"
    assert values["config"]["use-forwarded-headers"] == "false", "the controller is the edge"
    assert values["service"]["externalTrafficPolicy"] == "Local", "the client's own address"
    assert values["allowSnippetAnnotations"] is False


def test_the_servicemonitor_scrapes_the_web_service(with_component):
    rendered = with_component["servicemonitor"]
    monitor = one(rendered, "ServiceMonitor")
    service = one(rendered, "Service", WEB)
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"


def test_the_networkpolicy_admits_the_controller_and_prometheus_to_the_web_pods(with_component):
    rendered = with_component["networkpolicy"]
    policy = one(rendered, "NetworkPolicy")
    deployment = one(rendered, "Deployment", WEB)
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    sources = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    ]
    assert sources == ["ingress-nginx", "monitoring"]
    (port,) = web_container(rendered)["ports"]
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} == {
        port["name"]
    }


def test_keda_replaces_the_hpa_with_the_same_rule(rendered, with_component):
    hpa = one(rendered["redis"], "HorizontalPodAutoscaler")["spec"]
    keda = with_component["keda"]
    assert not objects(keda, "HorizontalPodAutoscaler"), "KEDA makes its own HPA"
    scaled = one(keda, "ScaledObject")
    deployment = one(keda, "Deployment", WEB)
    assert scaled["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == WEB
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
    triggers = {t["type"]: t for t in spec["triggers"]}
    prometheus, cpu = triggers["prometheus"], triggers["cpu"]
    assert prometheus["metricType"] == "AverageValue"
    assert (
        prometheus["metadata"]["threshold"] == hpa["metrics"][0]["pods"]["target"]["averageValue"]
    )
    query = prometheus["metadata"]["query"]
    assert SOCKETS_METRIC in query and f'namespace="{deployment["metadata"]["namespace"]}"' in query
    assert (
        int(cpu["metadata"]["value"])
        == hpa["metrics"][1]["resource"]["target"]["averageUtilization"]
    )


def test_the_example_site_gives_every_pod_its_secret_and_nothing_else_sees_it(site):
    secret = one(site, "Secret")
    assert sorted(secret["data"]) == sorted(CREDENTIALS)
    for name, spec in pod_specs(site).items():
        for container in spec["containers"]:
            refs = [s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s]
            assert refs == [secret["metadata"]["name"]], name
            assert container["image"] == "registry.example.com/teamtrack:1.0.0"
    outside = yaml.safe_dump_all([o for o in site if o["kind"] != "Secret"])
    assert FAKE_PASSWORD not in outside and "s3cr3t" not in outside
    for check in CHECKS:
        check(site)
    hosts = config(site)["ALLOWED_HOSTS"].split(",")
    for ingress in objects(site, "Ingress"):
        assert [rule["host"] for rule in ingress["spec"]["rules"]] == hosts
        assert ingress["spec"]["tls"][0]["hosts"] == hosts


def test_the_example_secret_file_is_never_committed():
    assert "secret.env" in (K8S / "site" / ".gitignore").read_text().split()
    example = (K8S / "site" / "secret.env.example").read_text()
    names = [line.split("=", 1)[0] for line in example.splitlines() if line and line[0] != "#"]
    assert sorted(names) == sorted(CREDENTIALS)


# ------------------------------------------------------------ each check catches its part gone


def deployment_spec(rendered):
    return one(rendered, "Deployment", WEB)["spec"]


def hpa_spec(rendered):
    return one(rendered, "HorizontalPodAutoscaler")["spec"]


def ingress_named(rendered, name):
    return one(rendered, "Ingress", name)["metadata"]["annotations"]


def drop_path(rendered, ingress, path):
    spec = one(rendered, "Ingress", ingress)["spec"]
    paths = spec["rules"][0]["http"]["paths"]
    paths[:] = [p for p in paths if p["path"] != path]


MUTATIONS = {
    "no readiness probe": (check_probes, lambda r: web_container(r).pop("readinessProbe")),
    "liveness on /readyz": (
        check_probes,
        lambda r: web_container(r)["livenessProbe"]["httpGet"].update(path="/readyz"),
    ),
    "readiness timeout shorter than /readyz": (
        check_probes,
        lambda r: web_container(r)["readinessProbe"].update(timeoutSeconds=3),
    ),
    "pod address not allowed": (check_probes, lambda r: web_container(r).pop("env")),
    "no preStop": (check_drain_time, lambda r: web_container(r).pop("lifecycle")),
    "Kubernetes' default grace": (
        check_drain_time,
        lambda r: deployment_spec(r)["template"]["spec"].pop("terminationGracePeriodSeconds"),
    ),
    "a replica count": (check_hpa, lambda r: deployment_spec(r).update(replicas=3)),
    "no sockets metric": (check_hpa, lambda r: hpa_spec(r)["metrics"].pop(0)),
    "no CPU metric": (check_hpa, lambda r: hpa_spec(r)["metrics"].pop(1)),
    "slow scale-up": (
        check_hpa,
        lambda r: hpa_spec(r)["behavior"]["scaleUp"].update(stabilizationWindowSeconds=300),
    ),
    "fast scale-down": (
        check_hpa,
        lambda r: hpa_spec(r)["behavior"]["scaleDown"].update(stabilizationWindowSeconds=0),
    ),
    "no PDB": (check_pdb, lambda r: r.remove(one(r, "PodDisruptionBudget"))),
    "PDB on other pods": (
        check_pdb,
        lambda r: one(r, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].update(
            {"app.kubernetes.io/component": "other"}
        ),
    ),
    "no layer": (lambda r: check_layer(r, "redis"), lambda r: config(r).pop("CHANNEL_LAYER")),
    "a password in a URL": (
        check_credentials,
        lambda r: config(r).update(BROKER="redis://:hunter2@redis:6379/0"),
    ),
    "a credential in the ConfigMap": (
        check_credentials,
        lambda r: config(r).update(SECRET_KEY="x"),
    ),
    "a literal credential": (
        check_credentials,
        lambda r: web_container(r)["env"].append({"name": "SECRET_KEY", "value": "x"}),
    ),
    "no Secret": (
        check_credentials,
        lambda r: web_container(r).update(envFrom=web_container(r)["envFrom"][:1]),
    ),
    "/metrics served": (
        check_ingress,
        lambda r: ingress_named(r, "teamtrack-internal").pop(
            "nginx.ingress.kubernetes.io/denylist-source-range"
        ),
    ),
    "/readyz not refused": (check_ingress, lambda r: drop_path(r, "teamtrack-internal", "/readyz")),
    "sockets logged": (
        check_ingress,
        lambda r: ingress_named(r, "teamtrack-sockets").pop(
            "nginx.ingress.kubernetes.io/enable-access-log"
        ),
    ),
    "sockets buffered": (
        check_ingress,
        lambda r: ingress_named(r, "teamtrack-sockets").pop(
            "nginx.ingress.kubernetes.io/proxy-buffering"
        ),
    ),
    "sockets cut after a minute": (
        check_ingress,
        lambda r: ingress_named(r, "teamtrack-sockets").pop(
            "nginx.ingress.kubernetes.io/proxy-read-timeout"
        ),
    ),
    "OsmAnd logged": (
        check_ingress,
        lambda r: ingress_named(r, "teamtrack-osmand").pop(
            "nginx.ingress.kubernetes.io/enable-access-log"
        ),
    ),
    "a snippet": (
        check_ingress,
        lambda r: ingress_named(r, "teamtrack").update(
            {"nginx.ingress.kubernetes.io/server-snippet": "return 200;"}
        ),
    ),
    "no trusted proxies": (check_proxies, lambda r: config(r).pop("TRUSTED_PROXIES")),
    "no open-file limit": (check_command, lambda r: web_container(r).update(command=["sh", "-c"])),
    "daphne's options changed": (check_command, lambda r: web_container(r)["args"].pop(3)),
    "not scraped": (
        check_scraping,
        lambda r: deployment_spec(r)["template"]["metadata"].pop("annotations"),
    ),
    "no retention job": (check_jobs, lambda r: r.remove(one(r, "CronJob"))),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_each_check_catches_its_part_gone(rendered, mutation):
    check, mutate = MUTATIONS[mutation]
    changed = copy.deepcopy(rendered["redis"])
    check(changed)  # passes as rendered
    mutate(changed)
    with pytest.raises(AssertionError):
        check(changed)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_pods_wait_for_their_release_s_migrations(rendered, overlay):
    pod = one(rendered[overlay], "Deployment", WEB)["spec"]["template"]["spec"]
    (waiting,) = pod["initContainers"]
    assert "migrate --check" in " ".join(waiting["command"])
    assert waiting["image"] == web_container(rendered[overlay])["image"]
    assert waiting["envFrom"] == web_container(rendered[overlay])["envFrom"]
