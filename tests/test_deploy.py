"""docker/ and the FreeSWITCH node configuration: docker-compose accepts the stack, every file parses,
and the ports, passwords, roles and dialplan contexts agree between the compose file, the
FreeSWITCH XML and esl-app's cluster settings. No container engine runs here: ``docker-compose config``
(the Debian package ``docker-compose``, installed by .ci/run) validates and resolves the file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from esl_app.cluster.settings import ClusterSettings, Role
from esl_app.doctor import Report, Severity, check_node
from esl_app.testing.fake_node import FakeNode
from esl_app.transport.inbound import DEFAULT_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
CONF = DOCKER / "freeswitch" / "conf"
DIALPLAN = ROOT / "dialplan"
BUILTIN_VARS = {"local_ip_v4": "192.0.2.2"}  # set by FreeSWITCH itself (switch_core_init)
SECRETS = {"ESL_PASSWORD": "compose-test-secret-0123", "POSTGRES_PASSWORD": "pg-test-secret"}
SERVICES = {
    "kamailio", "freeswitch-inbound-1", "freeswitch-outbound-1", "redis", "postgres",
    "migrate", "esl-app-inbound", "esl-app-outbound", "edge-feed", "dialer",
}  # fmt: skip


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (apt-get install docker-compose; .ci/run does it)"
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [binary, "--project-directory", str(DOCKER), "-f", str(DOCKER / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=DOCKER,
    )  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# -- the compose file ------------------------------------------------------------------------------


def test_docker_compose_accepts_the_stack(compose):
    assert set(compose["services"]) == SERVICES
    assert "profiles" not in compose["services"]["dialer"]  # `esl-app dialer` exists: `up` starts it
    assert compose["services"]["dialer"]["command"] == ["dialer"]
    assert compose["services"]["edge-feed"]["command"] == ["edge", "feed"]  # load feedback to Kamailio


def test_no_secret_has_a_default(compose):
    result = compose_config({})
    assert result.returncode != 0
    assert "ESL_PASSWORD" in result.stderr or "POSTGRES_PASSWORD" in result.stderr
    assert DEFAULT_PASSWORD not in (DOCKER / "docker-compose.yml").read_text()


def test_every_service_is_on_the_host_network_with_a_health_check(compose):
    for name, service in compose["services"].items():
        assert service.get("network_mode") == "host", name
        if name == "migrate":  # one-shot
            continue
        test = service["healthcheck"]["test"]
        assert test and test != ["NONE"], name


def test_each_service_takes_its_files_from_its_own_directory(compose):
    services = compose["services"]
    kamailio = [v.split(":")[0] for v in services["kamailio"]["volumes"]]
    assert str(DOCKER / "kamailio" / "kamailio.cfg") in kamailio
    for name in ("freeswitch-inbound-1", "freeswitch-outbound-1"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts["/etc/freeswitch"] == str(CONF)
        assert mounts["/etc/esl-app/dialplan"] == str(DIALPLAN)
        assert services[name]["ulimits"]["nofile"]["soft"] >= 65536
    for name in ("esl-app-inbound", "esl-app-outbound", "dialer", "migrate"):
        assert services[name]["build"]["dockerfile"] == "docker/esl-app/Dockerfile"
    dockerfile = (DOCKER / "esl-app" / "Dockerfile").read_text()
    assert "python -m build --wheel" in dockerfile and "pip install --no-cache-dir /wheels/*.whl" in dockerfile
    for path in ("freeswitch/Dockerfile", "freeswitch/entrypoint.sh", "freeswitch/healthcheck.sh",
                 "esl-app/healthcheck.py", "esl-app/esl-app.toml", "redis/redis.conf", "postgres/postgresql.conf",
                 ".env.example", "README.md"):  # fmt: skip
        assert (DOCKER / path).is_file(), path


def cluster_of(service: dict) -> ClusterSettings:
    return ClusterSettings(nodes=json.loads(env_of(service)["ESL_APP_CLUSTER_NODES"]))


def test_nodes_ports_passwords_and_roles_agree_with_the_cluster_settings(compose):
    services = compose["services"]
    clusters = [cluster_of(services[name]) for name in ("esl-app-inbound", "esl-app-outbound", "dialer")]
    assert all(cluster == clusters[0] for cluster in clusters)
    by_name = {node.name: node for node in clusters[0].nodes}
    freeswitches = {name: env_of(s) for name, s in services.items() if name.startswith("freeswitch-")}
    assert set(by_name) == set(freeswitches)
    for name, env in freeswitches.items():
        node = by_name[name]
        assert node.port == int(env["FS_ESL_PORT"])
        assert node.password.get_secret_value() == env["FS_ESL_PASSWORD"] == SECRETS["ESL_PASSWORD"]
        assert node.roles == frozenset({Role(env["FS_ROLE"])})
    # one host network: no two services may claim the same port or RTP port
    claimed: list[tuple[str, int]] = []
    for name, env in freeswitches.items():
        claimed += [(name, int(env["FS_SIP_PORT"])), (name, int(env["FS_ESL_PORT"]))]
        claimed += [(name, port) for port in range(int(env["FS_RTP_START_PORT"]), int(env["FS_RTP_END_PORT"]) + 1)]
    for name in ("esl-app-inbound", "esl-app-outbound", "dialer"):
        env = env_of(services[name])
        claimed.append((name, int(env.get("ESL_APP_HTTP_PORT") or env["ESL_APP_DIALER_METRICS_PORT"])))
        for pool in ("INBOUND", "OUTBOUND"):
            if env.get(f"ESL_APP_POOLS__{pool}__WORKERS", "1") != "0" and f"ESL_APP_POOLS__{pool}__PORT" in env:
                claimed.append((name, int(env[f"ESL_APP_POOLS__{pool}__PORT"])))
    claimed += [("kamailio", 5060), ("redis", 6379), ("postgres", 5432)]
    ports = [port for _, port in claimed]
    assert len(ports) == len(set(ports)), sorted(p for p in ports if ports.count(p) > 1)[:10]


def test_each_role_hands_calls_to_its_own_esl_app_pool(compose):
    services = compose["services"]
    inbound_fs, outbound_fs = env_of(services["freeswitch-inbound-1"]), env_of(services["freeswitch-outbound-1"])
    inbound_app, outbound_app = env_of(services["esl-app-inbound"]), env_of(services["esl-app-outbound"])
    assert inbound_fs["FS_ESL_APP_PRIMARY"] == f"127.0.0.1:{inbound_app['ESL_APP_POOLS__INBOUND__PORT']}"
    assert outbound_fs["FS_ESL_APP_OUTBOUND_PRIMARY"] == f"127.0.0.1:{outbound_app['ESL_APP_POOLS__OUTBOUND__PORT']}"
    assert inbound_app["ESL_APP_POOLS__OUTBOUND__WORKERS"] == "0"
    assert outbound_app["ESL_APP_POOLS__INBOUND__WORKERS"] == "0"
    contexts = dialplan_contexts()
    for app in (inbound_app, outbound_app):
        extension, dialplan, context = app["ESL_APP_HANDOFF_EXTENSION"].split()
        assert dialplan == "XML" and extension in contexts[context]


# -- the FreeSWITCH XML ----------------------------------------------------------------------------


def xml_files() -> list[Path]:
    return sorted([*CONF.rglob("*.xml"), *DIALPLAN.glob("*.xml")])


@pytest.mark.parametrize("path", xml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_freeswitch_xml_file_parses(path):
    ET.parse(path)


def preprocessor_vars(env: dict[str, str] | None = None) -> dict[str, str]:
    """vars.xml as FreeSWITCH's preprocessor reads it: ``set`` in order, ``env-set`` from ``env``."""
    values: dict[str, str] = dict(BUILTIN_VARS)
    for node in ET.parse(CONF / "vars.xml").getroot().iter("X-PRE-PROCESS"):
        name, _, value = node.get("data", "").partition("=")
        value = re.sub(r"\$\$\{(\w+)\}", lambda m: values.get(m.group(1), ""), value)
        if node.get("cmd") == "set":
            values[name] = value
        elif node.get("cmd") == "env-set" and value.startswith("$") and (env or {}).get(value[1:]) is not None:
            values[name] = (env or {})[value[1:]]
    return values


def params(path: Path, variables: dict[str, str]) -> dict[str, str]:
    out = {}
    for param in ET.parse(path).getroot().iter("param"):
        out[param.get("name")] = re.sub(r"\$\$\{(\w+)\}", lambda m: variables[m.group(1)], param.get("value"))
    return out


def test_switch_conf_limits_heartbeat_tmpfs_core_db_and_no_api_expansion():
    switch = params(DIALPLAN / "switch.conf.xml", preprocessor_vars())
    assert switch["api-expansion"] == "false"
    assert 1 <= int(switch["event-heartbeat-interval"]) <= 2
    assert switch["core-db-name"].startswith("/dev/shm/")
    assert int(switch["max-sessions"]) > 0 and 0 < int(switch["sessions-per-second"]) < int(switch["max-sessions"])
    # the included switch.conf is the repository's dialplan/ one, not a second copy
    assert not (CONF / "autoload_configs" / "switch.conf.xml").exists()
    assert "/etc/esl-app/dialplan/switch.conf.xml" in (CONF / "freeswitch.xml").read_text()
    assert "-db /dev/shm/freeswitch" in " ".join(json.loads((DOCKER / "freeswitch/Dockerfile").read_text()
                                                            .split("CMD ", 1)[1]))  # fmt: skip


def test_the_compose_environment_reaches_every_node_variable(compose):
    env_set = {
        node.get("data").split("=$", 1)[1]
        for node in ET.parse(CONF / "vars.xml").getroot().iter("X-PRE-PROCESS")
        if node.get("cmd") == "env-set"
    }
    for name in ("freeswitch-inbound-1", "freeswitch-outbound-1"):
        env = env_of(compose["services"][name])
        assert set(env) <= env_set, set(env) - env_set  # no FS_* variable is silently ignored
        variables = preprocessor_vars(env)
        socket = params(CONF / "autoload_configs" / "event_socket.conf.xml", variables)
        assert socket["listen-port"] == env["FS_ESL_PORT"]
        assert socket["password"] == SECRETS["ESL_PASSWORD"]
        assert variables["esl_app_context"] == f"esl_app_{env['FS_ROLE']}"
        sofia = params(CONF / "sip_profiles" / "edge.xml", variables)
        assert sofia["sip-port"] == env["FS_SIP_PORT"]
        assert sofia["context"] in dialplan_contexts()
        switch = params(DIALPLAN / "switch.conf.xml", variables)
        assert switch["max-sessions"] == env["FS_MAX_SESSIONS"]
        assert switch["rtp-start-port"] == env["FS_RTP_START_PORT"]
    # the password has no default in the XML: without FS_ESL_PASSWORD it would be empty, and the
    # entrypoint refuses that (test below)
    assert "esl_password" not in preprocessor_vars()


def test_event_socket_has_an_acl_that_exists():
    socket = params(CONF / "autoload_configs" / "event_socket.conf.xml", preprocessor_vars({"FS_ESL_PASSWORD": "x"}))
    lists = {node.get("name") for node in ET.parse(CONF / "autoload_configs" / "acl.conf.xml").getroot().iter("list")}
    assert socket["apply-inbound-acl"] in lists
    assert socket["password"] != DEFAULT_PASSWORD


def test_the_sofia_profile_trusts_only_kamailio_and_answers_503_when_busy():
    sofia = params(CONF / "sip_profiles" / "edge.xml", preprocessor_vars())
    assert sofia["sip-options-respond-503-on-busy"] == "true"
    assert sofia["apply-inbound-acl"] == "kamailio"
    assert sofia["apply-proxy-acl"] == "kamailio"
    assert sofia["disable-register"] == "true"
    lists = ET.parse(CONF / "autoload_configs" / "acl.conf.xml").getroot()
    kamailio = next(node for node in lists.iter("list") if node.get("name") == "kamailio")
    assert kamailio.get("default") == "deny"


def dialplan_contexts() -> dict[str, set[str]]:
    root = ET.parse(DIALPLAN / "pools.xml").getroot()
    return {ctx.get("name"): {ext.get("name") for ext in ctx.iter("extension")} for ctx in root.iter("context")}


def test_pool_contexts_fall_back_to_the_second_server_then_fail_cleanly():
    root = ET.parse(DIALPLAN / "pools.xml").getroot()
    assert set(dialplan_contexts()) == {"esl_app_inbound", "esl_app_outbound"}
    for context in root.iter("context"):
        for extension in context.iter("extension"):
            actions = [(a.get("application"), a.get("data")) for a in extension.iter("action")]
            apps = [app for app, _ in actions]
            assert apps[:2] == ["socket", "socket"], (context.get("name"), extension.get("name"))
            assert actions[0][1].split()[0] != actions[1][1].split()[0]  # a second server, not the same twice
            assert apps[-1] == "hangup"
            if context.get("name") == "esl_app_inbound":
                assert ("respond", "503 Service Unavailable") in actions  # Kamailio fails over to another node
            for _, data in actions:  # load-time variables only; no caller data reaches expansion
                assert not re.search(r"(?<!\$)\$\{(?!uuid\})", data), data


def test_the_entrypoint_refuses_a_missing_or_default_password(tmp_path):
    entrypoint = DOCKER / "freeswitch" / "entrypoint.sh"
    base = {"PATH": os.environ["PATH"], "FS_SHM_DIR": str(tmp_path / "shm")}
    for password in (None, "", DEFAULT_PASSWORD):
        env = dict(base) if password is None else {**base, "FS_ESL_PASSWORD": password}
        result = subprocess.run(["sh", str(entrypoint), "true"], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 64, password
        assert "FS_ESL_PASSWORD" in result.stderr
    ok = subprocess.run(["sh", str(entrypoint), "echo", "started"], env={**base, "FS_ESL_PASSWORD": "s3cret-value"},
                        capture_output=True, text=True, timeout=30)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.strip() == "started"
    assert (tmp_path / "shm").is_dir()


# -- Kubernetes ------------------------------------------------------------------------------------


def k8s_documents() -> list[dict]:
    documents = []
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def test_k8s_freeswitch_nodes_use_the_host_network_and_esl_app_has_both_pools():
    documents = k8s_documents()
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in documents if doc["kind"] != "Kustomization"}
    assert {("StatefulSet", "freeswitch-inbound"), ("StatefulSet", "freeswitch-outbound"),
            ("Deployment", "esl-app-inbound"), ("Deployment", "esl-app-outbound")} <= kinds  # fmt: skip
    for doc in documents:
        if doc["kind"] == "StatefulSet":
            spec = doc["spec"]["template"]["spec"]
            assert spec["hostNetwork"] is True
            assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
            env = {item["name"]: item for item in spec["containers"][0]["env"]}
            assert "secretKeyRef" in env["FS_ESL_PASSWORD"]["valueFrom"]  # never a literal password
        if doc["kind"] == "Deployment":
            env = {item["name"]: item for item in doc["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert "secretKeyRef" in env["ESL_APP_CLUSTER_NODES"]["valueFrom"]


def test_k8s_config_maps_are_built_from_the_files_compose_mounts():
    kustomization = yaml.safe_load((DOCKER / "k8s" / "kustomization.yaml").read_text())
    generated = {}
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (DOCKER / "k8s" / file).resolve().is_file(), file
        generated[generator["name"]] = {Path(file).name for file in generator["files"]}
    for resource in kustomization["resources"]:
        assert (DOCKER / "k8s" / resource).is_file()
    for doc in k8s_documents():
        if doc["kind"] != "StatefulSet":
            continue
        for volume in doc["spec"]["template"]["spec"]["volumes"]:
            for source in volume.get("projected", {}).get("sources", []):
                keys = {item["key"] for item in source["configMap"]["items"]}
                assert keys == generated[source["configMap"]["name"]]
            if "configMap" in volume:
                assert volume["configMap"]["name"] in generated
    mounted = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.xml")}
    projected = {
        item["path"]
        for doc in k8s_documents() if doc["kind"] == "StatefulSet"
        for volume in doc["spec"]["template"]["spec"]["volumes"]
        for source in volume.get("projected", {}).get("sources", [])
        for item in source["configMap"]["items"]
    }  # fmt: skip
    assert projected == mounted  # the pods see the same tree as the compose containers


def test_a_node_running_the_shipped_configuration_passes_esl_app_doctor(compose):
    """The fake node loads what docker/ gives freeswitch-inbound-1 (switch.conf, event_socket.conf) and
    the cluster settings are the esl-app services' own: the doctor finds nothing to fix."""
    env = env_of(compose["services"]["freeswitch-inbound-1"])
    variables = preprocessor_vars(env)
    switch = params(DIALPLAN / "switch.conf.xml", variables)
    socket = params(CONF / "autoload_configs" / "event_socket.conf.xml", variables)
    node = FakeNode(
        "freeswitch-inbound-1",
        password=socket["password"],
        heartbeat_interval=float(switch["event-heartbeat-interval"]),
        max_sessions=int(switch["max-sessions"]),
        sessions_per_second=int(switch["sessions-per-second"]),
    )
    node.config_params = {"switch.conf": switch, "event_socket.conf": {**socket, "listen-port": "0"}}
    node.db_dir = "/dev/shm/freeswitch"  # the Dockerfile's -db
    node.start()
    try:
        app = env_of(compose["services"]["esl-app-inbound"])
        toml = DOCKER / "esl-app" / "esl-app.toml"
        cluster = tomllib.loads(toml.read_text())["cluster"]
        nodes = json.loads(app["ESL_APP_CLUSTER_NODES"])
        entry = next(n for n in nodes if n["name"] == "freeswitch-inbound-1")
        settings = ClusterSettings(nodes=[{**entry, "port": node.port}], **cluster)
        findings = check_node(settings.nodes[0], settings, heartbeat_wait=10.0)
    finally:
        node.stop()
    assert all(f.severity is Severity.OK for f in findings), Report(findings=findings).format_text()


def test_the_edge_feeder_and_the_dispatcher_list_name_the_same_nodes(compose):
    """`esl-app edge feed` disables a node by its dispatcher URI: the URIs it is given, the list Kamailio
    loads and the nodes' SIP ports must agree, each node in the set of its role (1 inbound, 2 outbound)."""
    services = compose["services"]
    feeder = env_of(services["edge-feed"])
    assert cluster_of(services["edge-feed"]) == cluster_of(services["esl-app-inbound"])
    uris = json.loads(feeder["ESL_APP_EDGE_SIP_URIS"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["kamailio"]["volumes"]}
    listed = {}
    for line in Path(mounts["/etc/kamailio/dispatcher.list"]).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            setid, uri, _flags, _priority, attributes = line.split()
            listed[dict(a.split("=") for a in attributes.split(";"))["node"]] = (int(setid), uri)
    for name, service in services.items():
        if name.startswith("freeswitch-"):
            env = env_of(service)
            expected_set = {"inbound": 1, "outbound": 2}[env["FS_ROLE"]]
            assert uris[name] == f"sip:127.0.0.1:{env['FS_SIP_PORT']}"
            assert listed[name] == (expected_set, uris[name])
    assert set(listed) == set(uris)
