"""Operator monitoring: the alert rules (promtool checks and rule unit tests), the Prometheus
Operator objects (against the operator's CRD schemas), the Grafana dashboard and its
provisioning in compose, and, on a real worker and a real Prometheus, that every series the
rules and panels use is served and every panel query answers."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml

from alphaswarm_orch.queues import LIGHT_QUEUES
from tests.deploy.conftest import DOCKER, K8S, REPO, kustomize
from tests.support import services
from tests.support.ops import STUB_TASKS, scrape, sender, stop_all
from tests.support.processes import free_port
from tests.support.runs import execute_job, wait_for
from tests.support.workers import WorkerProcess

DATA = Path(__file__).parent / "data"
PROMETHEUS_DIR = DOCKER / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
GRAFANA_DIR = DOCKER / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "alphaswarm-orch.json"
MONITORING = K8S / "monitoring"
K8S_VERSION = "1.32"
WORKERS_JOB = "alphaswarm-workers"
QUEUE_LABEL = "alphaswarm.io/queue"
CRDS = {"PrometheusRule": "prometheusrules", "PodMonitor": "podmonitors"}
PROMETHEUS_SERIES = {"up"}
"""Series Prometheus itself adds to every scraped target (not on a worker's /metrics)."""
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$queue": ".*"}
"""What Grafana substitutes in the panel queries, as the live test substitutes it."""


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} missing: apt-get install -y prometheus (.ci/run does it)"
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def rule_groups(path: Path = RULES) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text())["groups"]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows left out)."""
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def panel_queries(board: dict[str, Any]) -> dict[str, str]:
    """'<panel title> / <refId>' -> PromQL."""
    return {
        f"{panel['title']} / {target['refId']}": target["expr"]
        for panel in panels(board)
        for target in panel["targets"]
    }


def metric_names(expr: str) -> set[str]:
    """The project's series an expression reads: every name is prefixed celery_ or
    alphaswarm_ (label names and values never are), plus Prometheus' own `up`."""
    names = set(re.findall(r"\b(?:celery|alphaswarm)_[a-zA-Z0-9_:]+", expr))
    return names | ({"up"} if re.search(r"\bup\s*[{\[]", expr) else set())


# -- the rules -------------------------------------------------------------------------------


def test_promtool_accepts_the_rules_and_the_compose_scrape_config() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout
    config = promtool("check", "config", SCRAPE_CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    groups = rule_groups()
    groups[0]["rules"][0]["expr"] = "sum by (queue_name (celery_queue_length)"
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump({"groups": groups}))
    checked = promtool("check", "rules", broken)
    assert checked.returncode != 0
    assert "parse error" in checked.stdout + checked.stderr


def test_the_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    names = set(alerts())
    assert names == {
        "AlphaswarmWorkerDown",
        "AlphaswarmWorkerDisconnected",
        "AlphaswarmQueueBacklogGrowing",
        "AlphaswarmSessionsWaitingForSlot",
        "AlphaswarmLedgerMirrorLagging",
        "AlphaswarmLedgerMirrorStalled",
        "AlphaswarmDeadLetters",
        "AlphaswarmKillSwitchEngaged",
        "AlphaswarmRunStepsFailing",
        "AlphaswarmTasksFailing",
        "AlphaswarmMetricsSourceDown",
    }
    assert names - firing == set(), "alerts no unit test shows firing"
    assert names - quiet == set(), "alerts no unit test shows staying quiet"
    assert (firing | quiet) - names == set(), "unit tests of alerts that do not exist"
    for rule in alerts().values():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "runbook"} <= set(rule["annotations"]), rule["alert"]


@pytest.mark.parametrize("expr", ["vector(0) > 1", "vector(1)"], ids=["never", "always"])
def test_the_unit_tests_fail_when_a_rule_is_broken(tmp_path: Path, expr: str) -> None:
    """Each alert's unit tests notice its rule never firing, and its rule always firing.

    Every rule is replaced at once (one promtool run); a test case only looks at its own
    alert, so each alert must be reported failed on its own."""
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = expr
    (tmp_path / RULES.name).write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", tmp_path / RULE_TESTS.name)
    assert result.returncode != 0, result.stdout
    failed = set(re.findall(r"alertname: (\w+),", result.stdout + result.stderr))
    assert failed == set(alerts())


# -- Kubernetes (Prometheus Operator) --------------------------------------------------------


def strict(schema: Any) -> Any:
    """The CRD's structural schema with unknown fields refused, as the API server does with
    kubectl's default `--validate=strict` (where the schema does not preserve them)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def crd_validator(kind: str) -> jsonschema.Validator:
    crd = yaml.safe_load((DATA / f"monitoring.coreos.com_{CRDS[kind]}.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


@pytest.fixture(scope="module")
def monitoring_objects() -> dict[str, dict[str, Any]]:
    """`kubectl kustomize k8s/monitoring`, by kind."""
    docs = [doc for doc in yaml.safe_load_all(kustomize(MONITORING)) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs) == 3, [doc["kind"] for doc in docs]
    return by_kind


def test_k8s_monitoring_validates_against_the_operator_crds(
    monitoring_objects: dict[str, dict[str, Any]],
) -> None:
    for kind in CRDS:
        doc = monitoring_objects[kind]
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        errors = [f"{e.json_path}: {e.message}" for e in crd_validator(kind).iter_errors(doc)]
        assert errors == [], f"{kind}: {errors}"
    config_map = monitoring_objects["ConfigMap"]
    kubernetes_validate.validate(config_map, K8S_VERSION, strict=True)


def test_the_crd_schemas_reject_bad_objects(
    monitoring_objects: dict[str, dict[str, Any]],
) -> None:
    rule = copy.deepcopy(monitoring_objects["PrometheusRule"])
    first = rule["spec"]["groups"][0]["rules"][0]
    first["for"] = "5 minutes"  # not a Prometheus duration
    first["exprs"] = first.pop("expr")  # misspelt: unknown, and `expr` is required
    messages = [e.message for e in crd_validator("PrometheusRule").iter_errors(rule)]
    assert len(messages) == 3, messages
    monitor = copy.deepcopy(monitoring_objects["PodMonitor"])
    monitor["spec"]["podMetricEndpoints"] = monitor["spec"].pop("podMetricsEndpoints")
    assert len(list(crd_validator("PodMonitor").iter_errors(monitor))) == 1


def test_the_prometheus_rule_carries_the_rules_file(
    monitoring_objects: dict[str, dict[str, Any]],
) -> None:
    assert monitoring_objects["PrometheusRule"]["spec"]["groups"] == rule_groups()


def test_the_dashboard_config_map_carries_the_compose_dashboard(
    monitoring_objects: dict[str, dict[str, Any]],
) -> None:
    config_map = monitoring_objects["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"] == {DASHBOARD.name: DASHBOARD.read_text()}


def test_the_pod_monitor_scrapes_the_worker_pods_only(
    monitoring_objects: dict[str, dict[str, Any]], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    monitor = monitoring_objects["PodMonitor"]
    selector = monitor["spec"]["selector"]["matchLabels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # Prometheus names the job <namespace>/<PodMonitor name>: the rules' job matcher.
    assert monitor["metadata"]["name"] == WORKERS_JOB
    (relabel,) = endpoint["relabelings"]
    # Kubernetes service discovery's name for the pod label (non-alphanumerics become _).
    assert relabel["sourceLabels"] == [
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", QUEUE_LABEL)
    ]
    assert relabel["targetLabel"] == "worker_queue"
    for overlay, docs in rendered.items():
        selected = set()
        for doc in docs:
            if doc["kind"] != "Deployment":
                continue
            template = doc["spec"]["template"]
            if selector <= template["metadata"]["labels"].items():
                selected.add(doc["metadata"]["name"])
                (container,) = template["spec"]["containers"]
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                assert ports[endpoint["port"]] == 9100, doc["metadata"]["name"]
                assert template["metadata"]["labels"][QUEUE_LABEL] in LIGHT_QUEUES
        assert selected == {f"worker-{name}" for name in LIGHT_QUEUES}, overlay


def test_the_rules_select_the_workers_job_of_compose_and_kubernetes() -> None:
    expr = alerts()["AlphaswarmWorkerDown"]["expr"]
    pattern = re.search(r'job=~"([^"]+)"', expr)
    assert pattern is not None
    for job in (WORKERS_JOB, f"alphaswarm/{WORKERS_JOB}", f"alphaswarm-dev/{WORKERS_JOB}"):
        assert re.fullmatch(pattern.group(1), job), job
    assert not re.fullmatch(pattern.group(1), "node-exporter")


# -- compose and the dashboard ---------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of a compose service: container path -> host path (absolute)."""
    found = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = str((DOCKER / source).resolve())
    return found


def test_compose_prometheus_scrapes_every_worker_and_loads_the_rules(
    compose: dict[str, Any],
) -> None:
    services_ = compose["services"]
    prometheus = services_["prometheus"]
    mounted = mounts(prometheus)
    command = prometheus["command"]
    config_path = next(a for a in command if a.startswith("--config.file=")).split("=", 1)[1]
    assert mounted[config_path] == str(SCRAPE_CONFIG)
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    for rule_file in config["rule_files"]:
        assert mounted[str(Path(config_path).parent / rule_file)] == str(RULES)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == WORKERS_JOB
    targets = {
        target: group["labels"]["worker_queue"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {f"worker-{name}:9100": name for name in LIGHT_QUEUES}
    for target in targets:
        service = services_[target.split(":")[0]]
        assert service["environment"]["ALPHASWARM_METRICS_PORT"] == "9100"
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]


def test_compose_grafana_provisions_the_datasource_and_the_dashboard(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    mounted = mounts(grafana)
    provisioning = Path(mounted["/etc/grafana/provisioning"])
    assert provisioning == GRAFANA_DIR / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())[
        "datasources"
    ]
    url = urllib.parse.urlsplit(source["url"])
    assert source["type"] == "prometheus" and url.hostname in compose["services"]
    prometheus_command = compose["services"][url.hostname]["command"]
    assert f"--web.listen-address=:{url.port}" in prometheus_command
    (provider,) = yaml.safe_load((provisioning / "dashboards/alphaswarm.yaml").read_text())[
        "providers"
    ]
    assert Path(mounted[provider["options"]["path"]]) == DASHBOARD.parent
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(mounted[str(Path(home).parent)]) / Path(home).name == DASHBOARD
    # Anonymous read-only access on localhost; no credential in the repository.
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert grafana["environment"]["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    assert grafana["ports"] == ["127.0.0.1:3001:3000"]


def overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["queue"]["query"]["query"] == "label_values(celery_queue_length, queue_name)"
    boxes = [panel["gridPos"] for panel in board["panels"]]
    for i, box in enumerate(boxes):
        assert box["x"] >= 0 and box["x"] + box["w"] <= 24 and box["h"] > 0, box
        assert not any(overlaps(box, other) for other in boxes[i + 1 :]), box
    for panel in panels(board):
        assert panel["type"] in ("stat", "timeseries"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$\w+", target["expr"]))
            assert used <= set(GRAFANA_VARIABLES), (panel["title"], used)
    # Each alert's signal is on the dashboard.
    shown = set().union(*(metric_names(e) for e in panel_queries(board).values()))
    for rule in alerts().values():
        assert metric_names(rule["expr"]) <= shown, rule["alert"]


# -- a real worker, a real Prometheus --------------------------------------------------------


@dataclass
class LiveWorker:
    env: dict[str, str]
    port: int
    worker: WorkerProcess


@pytest.fixture(scope="module")
def live(
    redis_urls: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveWorker]:
    """One worker on default, workflows and paper that has run a Dagster job's steps, stub
    tasks that succeed, fail and retry (on default and paper), with the ledger mirror synced:
    every series it can serve exists."""
    broker, backend = redis_urls
    root = tmp_path_factory.mktemp("live")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    started: list[WorkerProcess] = []
    with services.temporary_database() as postgres:
        port = free_port()
        env = {
            **os.environ,
            "ALPHASWARM_BROKER_URL": broker,
            "ALPHASWARM_RESULT_BACKEND": backend,
            "ALPHASWARM_POSTGRES_URL": postgres,
            "ALPHASWARM_STORAGE_DIR": str(root / "storage"),
            "ALPHASWARM_KILL_SWITCH_KEY": f"test:kill:{uuid.uuid4().hex}",
            "ALPHASWARM_METRICS_PORT": str(port),
            "ALPHASWARM_WORKER_INCLUDE": STUB_TASKS,
            "PROMETHEUS_MULTIPROC_DIR": str(root / "prometheus-multiproc"),
            "DAGSTER_HOME": str(home),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        try:
            worker = WorkerProcess.start(
                "default,workflows,paper", "monitoring", env, "--concurrency", "2"
            )
            started.append(worker)
            execute_job(env, "smoke_route_job")
            prefix = f"mon:{uuid.uuid4().hex}"
            app = sender(env)
            app.send_task("tests.stub.ok", args=[prefix], queue="default")
            app.send_task("tests.stub.ok", args=[prefix], queue="paper")
            app.send_task("tests.stub.fail", args=[prefix], queue="default")
            app.send_task("tests.stub.retry_once", args=[prefix], queue="default")
            client = redis.Redis.from_url(broker)
            wait_for(
                lambda: (
                    client.get(f"{prefix}:ok") == b"2"
                    and client.get(f"{prefix}:fail") == b"1"
                    and client.get(f"{prefix}:retried_ok") == b"1"
                ),
                60,
                "the stub tasks to run",
            )
            client.close()
            # Before the first scrape: the worker caches the ledger's state for 15 s.
            sync = subprocess.run(
                [sys.executable, "-m", "alphaswarm_orch.cli", "ledger", "sync"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert sync.returncode == 0, sync.stdout + sync.stderr
            yield LiveWorker(env=env, port=port, worker=worker)
        finally:
            stop_all(started)
            services.flush_redis(broker, backend)


def served_names(port: int) -> set[str]:
    return {name for name, _labels in scrape(port)}


@pytest.mark.integration
def test_every_series_of_the_rules_and_the_dashboard_is_served_by_a_worker(
    live: LiveWorker,
) -> None:
    used: dict[str, set[str]] = {}
    for rule in alerts().values():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(rule["alert"])
    for title, expr in panel_queries(dashboard()).items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(title)

    def missing() -> dict[str, set[str]]:
        served = served_names(live.port) | PROMETHEUS_SERIES
        return {name: users for name, users in used.items() if name not in served}

    # Task events are counted in the worker's main process just after the task returns.
    wait_for(lambda: not missing(), 30, f"every series to be served; missing {missing()}")
    assert {"celery_queue_length", "alphaswarm_dagster_steps_total"} <= set(used)
    assert "alphaswarm_ledger_mirror_synced_timestamp_seconds" in used
    # The check notices a name no worker serves.
    assert metric_names("max(celery_queue_lenght)") - served_names(live.port) == {
        "celery_queue_lenght"
    }


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping the live worker every second."""

    def __init__(self, directory: Path, worker_port: int) -> None:
        self.port = free_port()
        shutil.copy(RULES, directory / RULES.name)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [RULES.name],
            "scrape_configs": [
                {
                    "job_name": WORKERS_JOB,
                    "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (directory / "prometheus.log").open("w")
        argv = [tool("prometheus"), f"--config.file={directory / 'prometheus.yml'}"]
        argv += [f"--storage.tsdb.path={directory / 'data'}"]
        argv += [f"--web.listen-address=127.0.0.1:{self.port}"]
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> Any:
        try:
            return self.get("/api/v1/query", query=expr)
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())

    def ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited; see its log"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(live: LiveWorker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), live.port)
    try:
        wait_for(server.ready, 60, "prometheus to be ready")

        def scraped_enough() -> bool:
            # rate() and increase() need two samples of each series in their window.
            result = server.query(f'count_over_time(up{{job="{WORKERS_JOB}"}}[1m])')
            samples = result["data"]["result"]
            return bool(samples) and float(samples[0]["value"][1]) >= 3

        wait_for(scraped_enough, 60, "three scrapes of the worker")
        yield server
    finally:
        server.close()


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


@pytest.mark.integration
def test_every_panel_query_answers_on_a_real_prometheus(prometheus: Prometheus) -> None:
    up = prometheus.query(f'up{{job="{WORKERS_JOB}"}}')["data"]["result"]
    assert [sample["value"][1] for sample in up] == ["1"]
    answers = {}
    for title, expr in panel_queries(dashboard()).items():
        result = prometheus.query(grafana_expr(expr))
        assert result["status"] == "success", (title, result)
        answers[title] = result["data"]["result"]
    assert [title for title, samples in answers.items() if not samples] == []
    queues = prometheus.get("/api/v1/label/queue_name/values", **{"match[]": "celery_queue_length"})
    assert set(queues["data"]) == {"default", "workflows", "paper"}
    # A query naming a series nobody serves comes back empty: the check above can fail.
    assert prometheus.query("max(celery_queue_lenght)")["data"]["result"] == []


@pytest.mark.integration
def test_the_rules_evaluate_on_real_series(prometheus: Prometheus, live: LiveWorker) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = rules and all(rule["lastEvaluation"] > "0001-01-01T00:00:00Z" for rule in rules)
        return rules if done else None

    rules = wait_for(evaluated, 30, "every rule to be evaluated")
    assert {rule["name"] for rule in rules} == set(alerts())
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
    # The stub task's first failure on this worker: a new series, and the alert fires.
    firing = wait_for(
        lambda: [
            alert["labels"]
            for alert in prometheus.get("/api/v1/alerts")["data"]["alerts"]
            if alert["state"] == "firing"
        ],
        30,
        "an alert to fire",
    )
    assert {
        "alertname": "AlphaswarmTasksFailing",
        "severity": "warning",
        "name": "tests.stub.fail",
        "queue_name": "default",
        "exception": "ValueError",
    } in firing
    assert all(labels["alertname"] == "AlphaswarmTasksFailing" for labels in firing), firing
