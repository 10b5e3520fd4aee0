"""Chart unit tests: assertions on what `helm template` renders for the default values and every
ci/ scenario (hardening, probes, images, hooks, config, secrets, schema). `helm lint --strict` of
every scenario runs once, in check-chart.py (test_manifests.py)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from oms.broker.celery_app import TASK_QUEUE
from oms.settings import Settings
from tests.deploy.chart import (
    CHART,
    CI_VALUES,
    REPO,
    Document,
    RenderError,
    containers,
    env_names,
    find,
    helm,
    one,
    pod_spec,
    render,
    scenario_files,
    workloads,
)

SCENARIOS = [None, *scenario_files()]
SCENARIO_IDS = ["default", *(path.stem for path in scenario_files())]
FULL = CI_VALUES / "full-values.yaml"
# Credentials: every SecretStr setting, and the URLs that always embed a password.
SECRET_SETTINGS = {
    name for name, info in Settings.model_fields.items() if "SecretStr" in str(info.annotation)
} | {"DATABASE_URL", "RABBITMQ_URL", "CELERY_BROKER_URL"}


def scenario_docs(values: Path | None) -> list[Document]:
    return render([values] if values else [])


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_every_pod_is_hardened(values: Path | None) -> None:
    pods = workloads(scenario_docs(values))
    assert pods
    for doc in pods:
        spec = pod_spec(doc)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] != 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for container in containers(doc):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert not context.get("privileged"), where
            assert "add" not in context["capabilities"], where


@pytest.mark.parametrize("values", [v for v in SCENARIOS if v is None or "dev" not in v.name])
def test_root_filesystem_is_read_only_with_writable_scratch(values: Path | None) -> None:
    for doc in workloads(scenario_docs(values)):
        if doc["kind"] == "Pod":  # the helm test pod writes nothing
            continue
        volumes = {volume["name"]: volume for volume in pod_spec(doc).get("volumes", [])}
        for container in containers(doc):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], doc["metadata"]["name"]


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_images_are_pinned_and_never_latest(values: Path | None) -> None:
    for doc in workloads(scenario_docs(values)):
        for container in containers(doc):
            image = container["image"]
            reference = image.split("@")[0]
            assert ":" in reference.rsplit("/", 1)[-1], f"{image} has no tag"
            assert not reference.endswith(":latest"), image
            assert container["imagePullPolicy"] != "Always" or "@sha256:" in image


def test_default_images_follow_the_project_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    images = {c["image"] for doc in workloads(render()) for c in containers(doc)}
    # The operator too: it is on by default (it makes the API's signing keys).
    assert images == {
        f"ghcr.io/oms-project/oms-{name}:{version}"
        for name in ("api", "consumer", "worker", "operator")
    }


def test_digest_pins_every_image() -> None:
    for doc in workloads(render([FULL])):
        for container in containers(doc):
            assert re.search(r"@sha256:[0-9a-f]{64}$", container["image"]), container["image"]


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_long_running_containers_probe_their_health_endpoints(values: Path | None) -> None:
    expected = {
        "api": ("/health", "/health/ready", 8000),
        "consumer": ("/health", "/health/ready", 9101),
        "worker": ("/health", "/health/ready", 9102),
    }
    for doc in find(scenario_docs(values), "Deployment"):
        component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
        (container,) = containers(doc)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        if component == "operator":
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert ports[container["livenessProbe"]["httpGet"]["port"]] == 8080
            continue
        liveness, readiness, port = expected[component]
        assert container["startupProbe"]["httpGet"]["path"] == liveness
        assert container["livenessProbe"]["httpGet"]["path"] == liveness
        assert container["readinessProbe"]["httpGet"]["path"] == readiness
        assert ports[container["readinessProbe"]["httpGet"]["port"]] == port
        assert container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]


def test_probe_servers_listen_on_all_interfaces() -> None:
    """The settings default HOST is 127.0.0.1, which the kubelet cannot reach. (The operator's
    liveness and metrics servers default to 0.0.0.0: the chart leaves their hosts alone.)"""
    for doc in find(render(), "Deployment"):
        (container,) = containers(doc)
        names = env_names(container)
        if doc["metadata"]["name"] == "oms-operator":
            assert not {"OPERATOR_LIVENESS_HOST", "OPERATOR_METRICS_HOST"} & set(names)
        else:
            assert names["HOST"]["value"] == "0.0.0.0"


def test_migration_hook_runs_before_the_release_under_its_own_account() -> None:
    docs = render()
    job = one(docs, "Job", "oms-migrations")
    account = one(docs, "ServiceAccount", "oms-migrations")
    for hook in (job, account):
        annotations = hook["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight
    spec = pod_spec(job)
    assert spec["serviceAccountName"] == "oms-migrations"
    assert spec["restartPolicy"] == "Never"
    (container,) = containers(job)
    assert container["command"] == ["oms", "migrate"]
    # No envFrom: the release's ConfigMap does not exist yet when a pre-install hook runs.
    assert "envFrom" not in container
    configmap = one(docs, "ConfigMap", "oms")
    inline = {item["name"]: item.get("value") for item in container["env"] if "value" in item}
    assert inline == configmap["data"]


def test_worker_grace_period_allows_warm_shutdown() -> None:
    worker = one(render(), "Deployment", "oms-worker")
    api = one(render(), "Deployment", "oms-api")
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace >= 60
    assert grace > pod_spec(api)["terminationGracePeriodSeconds"]


def test_configmap_names_real_settings_and_holds_no_secret() -> None:
    for values in SCENARIOS:
        configmap = one(scenario_docs(values), "ConfigMap", "oms")
        for name, value in configmap["data"].items():
            if values == FULL and name == "OTEL_SERVICE_NAME":  # config.extraEnv passes through
                continue
            assert name in Settings.model_fields, f"{name} is not a setting"
            assert name not in SECRET_SETTINGS, f"{name} is a credential"
            assert not re.search(r"://[^/@]*:[^/@]*@", value), f"{name} carries a password"
    data = one(render(), "ConfigMap", "oms")["data"]
    assert data["JWT_AUTO_GENERATE_KEYS"] == "false"
    assert data["JWT_PRIVATE_KEY_PATH"] == "/var/run/secrets/oms/jwt/private.pem"
    assert data["JWT_JWKS_PATH"] == "/var/run/secrets/oms/jwt/jwks.json"


def test_the_charts_connection_and_login_defaults_are_the_services_own() -> None:
    """The chart sets these explicitly (platform teams tune them behind an ingress); by default
    it must not change what the API does without the chart."""
    data = one(render(), "ConfigMap", "oms")["data"]
    names = [name for name in data if name.startswith("HTTP_")]
    names += ["RATE_LIMIT_LOGIN_FAILURES", "RATE_LIMIT_IPV6_PREFIX"]
    assert len(names) == 6, names
    for name in names:
        default = Settings.model_fields[name].default
        assert type(default)(data[name]) == default, name


def test_credentials_come_from_existing_secrets() -> None:
    docs = render([FULL])
    assert not find(docs, "Secret"), "the chart must not create credential Secrets"
    (api,) = containers(one(docs, "Deployment", "oms-api"))
    env = env_names(api)
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "oms-rds"
    for name in ("REDIS_URL", "REDIS_URL_RATE_LIMIT", "REDIS_URL_CELERY"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "oms-redis"
    assert env["RABBITMQ_URL"]["valueFrom"]["secretKeyRef"]["name"] == "oms-amqp"
    assert "REDIS_URL" not in one(docs, "ConfigMap", "oms")["data"]


def test_jwt_keys_are_mounted_from_the_operator_secret_as_a_whole_volume() -> None:
    docs = render([FULL])
    api = one(docs, "Deployment", "oms-api")
    volumes = {volume["name"]: volume for volume in pod_spec(api)["volumes"]}
    (container,) = containers(api)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"].endswith("/jwt"))
    # A subPath mount would never see a rotated key.
    assert "subPath" not in mount
    assert mount["readOnly"] is True
    secret_name = volumes[mount["name"]]["secret"]["secretName"]
    ordersystem = one(docs, "OrderSystem", "oms")
    assert ordersystem["spec"]["jwt"]["secretName"] == secret_name
    own = render(sets=["jwt.existingSecret=my-keys"])
    api = one(own, "Deployment", "oms-api")
    assert {v["name"]: v for v in pod_spec(api)["volumes"]}["jwt-keys"]["secret"][
        "secretName"
    ] == "my-keys"


def test_ordersystem_matches_the_release_it_manages() -> None:
    docs = render([FULL])
    spec = one(docs, "OrderSystem", "oms")["spec"]
    worker = one(docs, "Deployment", spec["workers"]["deploymentName"])
    assert "replicas" not in worker["spec"], "the operator owns the worker replica count"
    assert spec["workers"]["queues"] == [TASK_QUEUE]
    (api,) = containers(one(docs, "Deployment", "oms-api"))
    assert spec["rabbitmq"]["urlSecretRef"] == {
        "name": env_names(api)["RABBITMQ_URL"]["valueFrom"]["secretKeyRef"]["name"],
        "key": env_names(api)["RABBITMQ_URL"]["valueFrom"]["secretKeyRef"]["key"],
    }
    data = one(docs, "ConfigMap", "oms")["data"]
    assert spec["jwt"]["tokenLifetime"] == f"{data['JWT_ACCESS_TOKEN_EXPIRE_MINUTES']}m"
    assert spec["jwt"]["clockSkew"] == f"{data['JWT_LEEWAY_SECONDS']}s"


def test_operator_rbac_is_minimal() -> None:
    docs = render([FULL])
    role = one(docs, "Role", "oms-operator")
    granted: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource, tuple(rule.get("resourceNames") or ()))
                granted.setdefault(key, set()).update(rule["verbs"])
    # Exactly the calls oms_operator makes (docs/operator.md), nothing more; Secrets other than
    # the key Secret and the RabbitMQ one (tests/cluster/test_rbac.py: on a real server) stay
    # unreadable. The full scenario's RabbitMQ Secret is oms-amqp.
    assert granted == {
        ("oms.dev", "ordersystems", ()): {"list", "watch", "patch"},
        ("oms.dev", "ordersystems/status", ()): {"patch"},
        ("", "secrets", ()): {"create"},
        ("", "secrets", ("oms-jwt-keys", "oms-amqp")): {"get", "patch"},
        ("apps", "deployments/scale", ()): {"get", "patch"},
        ("", "events", ()): {"create"},
        ("events.k8s.io", "events", ()): {"create"},
    }
    extra = render([FULL], sets=["operator.rbac.extraSecretNames={other-keys}"])
    names = [rule.get("resourceNames") for rule in one(extra, "Role", "oms-operator")["rules"]]
    assert ["oms-jwt-keys", "oms-amqp", "other-keys"] in names
    # Nothing cluster-wide by default (tests/cluster runs the operator without it) ...
    assert not find(docs, "ClusterRole")
    assert not find(docs, "ClusterRoleBinding")
    # ... and at most read-only CRD discovery when asked for.
    (cluster_role,) = find(render([FULL], sets=["operator.rbac.crdDiscovery=true"]), "ClusterRole")
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        }
    ]
    operator = one(docs, "Deployment", "oms-operator")
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    (container,) = containers(operator)
    assert env_names(container)["OPERATOR_NAMESPACES"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.namespace"
    }


def test_components_can_be_disabled() -> None:
    docs = render([CI_VALUES / "workers-disabled-values.yaml"])
    names = {doc["metadata"]["name"] for doc in find(docs, "Deployment")}
    assert names == {"oms-api"}
    assert not find(docs, "PodDisruptionBudget", "oms-worker")
    with pytest.raises(RenderError, match=r"rabbitmq\.existingSecret is required"):
        render(sets=["rabbitmq.existingSecret="])


def test_hpa_replaces_the_api_replica_count() -> None:
    docs = render([FULL])
    hpa = one(docs, "HorizontalPodAutoscaler", "oms-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "oms-api"
    assert "replicas" not in one(docs, "Deployment", "oms-api")["spec"]
    assert one(render(), "Deployment", "oms-api")["spec"]["replicas"] == 2


def test_ingress_routes_hosts_with_tls_to_the_api_service() -> None:
    docs = render([FULL])
    ingress = one(docs, "Ingress", "oms-api")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["hosts"] == ["orders.example.com"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = one(docs, "Service", backend["name"])
    assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}


def test_services_select_their_pods() -> None:
    docs = render([FULL])
    for service in find(docs, "Service"):
        selector = service["spec"]["selector"]
        matched = [
            doc
            for doc in find(docs, "Deployment")
            if selector.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in containers(matched[0]) for p in c["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports


def test_network_policies_cover_every_workload() -> None:
    docs = render([FULL])
    policies = find(docs, "NetworkPolicy")
    for deployment in find(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
            for policy in policies
        ), deployment["metadata"]["name"]
    assert all("Egress" in policy["spec"]["policyTypes"] for policy in policies)


def test_standard_labels_everywhere() -> None:
    for doc in render([FULL]):
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "helm.sh/chart"):
            assert key in labels, f"{doc['kind']}/{doc['metadata']['name']} lacks {key}"


def test_helm_test_pod_checks_the_api_health() -> None:
    (pod,) = find(render(), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = containers(pod)
    assert "http://oms-api:8000/health" in container["command"][-1]


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("api.replicas=3", "additional properties 'replicas' not allowed"),
        ("api.replicaCount=two", "want integer"),
        ("image.tag=latest", "image/tag"),
        ("redis.url=redis://user:hunter2@redis:6379/0", "redis/url"),
        ("ingress.hosts[0].paths[0].pathType=Prefixx", "pathType"),
        ("config.logLevel=LOUD", "logLevel"),
        ("databse.host=db", "additional properties 'databse' not allowed"),
    ],
)
def test_schema_rejects_typos_and_wrong_types(assignment: str, complaint: str) -> None:
    result = helm("template", "oms", str(CHART), "--set", assignment)
    assert result.returncode != 0
    assert complaint in result.stderr


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return set()
    found: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        found.add(path)
        if key != "spec" or prefix != "orderSystem":
            found |= _keys(value, path)
    return found


def _schema_keys(schema: dict[str, Any], prefix: str = "") -> set[str]:
    found: set[str] = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        found.add(path)
        found |= _schema_keys(sub, path)
    return found


# Values whose children are Kubernetes objects or maps: typed as objects, not key by key.
FREE_FORM = re.compile(
    r"^(podSecurityContext|securityContext)\.|(^|\.)(resources|nodeSelector|sidecarLabel|"
    r"matchLabels|ingressControllerNamespaceSelector|monitoringNamespaceSelector)\."
)


def test_schema_types_every_value() -> None:
    """Descriptions are the chart README's business (helm-docs: test_chart_release.py)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    typed = _schema_keys(schema)
    missing = {key for key in _keys(values) if key not in typed and not FREE_FORM.search(key)}
    assert not missing, f"values without a schema entry: {sorted(missing)}"


# --- client addresses, metrics and docs behind the ingress ----------------------------------------

INGRESS_ON = "ingress.enabled=true"


def test_an_ingress_without_trusted_proxies_refuses_to_render() -> None:
    """Behind an ingress with no trusted proxy every client would share the controller's address,
    so one client's failed logins would lock everyone out: the chart says what to set."""
    with pytest.raises(RenderError) as refused:
        render(sets=[INGRESS_ON])
    message = str(refused.value)
    assert "config.trustedProxies" in message
    assert "ingress.allowSharedClientAddress=true" in message
    trusted = render(sets=[INGRESS_ON, "config.trustedProxies={10.0.0.0/8}"])
    assert one(trusted, "ConfigMap", "oms")["data"]["TRUSTED_PROXIES"] == "10.0.0.0/8"
    assert one(trusted, "Ingress", "oms-api")
    acknowledged = render(sets=[INGRESS_ON, "ingress.allowSharedClientAddress=true"])
    assert one(acknowledged, "Ingress", "oms-api")
    # Without an ingress nothing stands between client and API: the peer is the client.
    assert not find(render(), "Ingress")


def _install_notes(*sets: str) -> str:
    argv = ["install", "oms", str(CHART), "--dry-run=client", "--namespace", "oms"]
    for assignment in sets:
        argv += ["--set", assignment]
    result = helm(*argv)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_install_notes_warn_about_a_shared_client_address() -> None:
    shared = _install_notes(INGRESS_ON, "ingress.allowSharedClientAddress=true")
    assert "WARNING: config.trustedProxies is empty behind the Ingress" in shared
    trusted = _install_notes(INGRESS_ON, "config.trustedProxies={10.0.0.0/8}")
    assert "trustedProxies" not in trusted


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_api_metrics_have_a_port_of_their_own_that_the_ingress_never_routes(
    values: Path | None,
) -> None:
    docs = scenario_docs(values)
    (api,) = containers(one(docs, "Deployment", "oms-api"))
    ports = {port["name"]: port["containerPort"] for port in api["ports"]}
    assert int(env_names(api)["API_METRICS_PORT"]["value"]) == ports["metrics"] != ports["http"]
    metrics_service = one(docs, "Service", "oms-api-metrics")
    assert metrics_service["spec"]["type"] == "ClusterIP"
    assert [port["targetPort"] for port in metrics_service["spec"]["ports"]] == ["metrics"]
    api_service = one(docs, "Service", "oms-api")
    assert {port["targetPort"] for port in api_service["spec"]["ports"]} == {"http"}
    for ingress in find(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"] == {"name": "oms-api", "port": {"name": "http"}}
    for monitor in find(docs, "ServiceMonitor"):
        assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} == {"metrics"}
    for policy in find(docs, "NetworkPolicy", "oms-api"):
        monitoring = policy["spec"]["ingress"][-1]
        assert monitoring["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"
        }
        assert [port["port"] for port in monitoring["ports"]] == ["metrics"]


def test_the_full_scenario_scrapes_and_guards_the_api_metrics_port() -> None:
    """The loops above must have had something to check."""
    docs = render([FULL])
    assert find(docs, "Ingress")
    assert find(docs, "ServiceMonitor")
    assert find(docs, "NetworkPolicy", "oms-api")


def test_api_docs_are_off_unless_asked_for() -> None:
    def docs_setting(docs: list[Document]) -> bool:
        (api,) = containers(one(docs, "Deployment", "oms-api"))
        value = env_names(api)["API_DOCS_ENABLED"]["value"]
        return Settings(_env_file=None, API_DOCS_ENABLED=value).API_DOCS_ENABLED

    assert docs_setting(render()) is False
    assert docs_setting(render([FULL])) is False
    assert docs_setting(render(sets=["api.docs.enabled=true"])) is True
