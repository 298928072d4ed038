"""What the deployment files promise beyond their schemas (`make lint-deploy` checks those): no affinity anywhere,
the migrations before everything, exactly one beat, probes the gateway answers, no real secrets, non-root pods."""

from __future__ import annotations

import re
from typing import Any

import yaml

from deploy.healthcheck import probe_host
from tests.deploy import files


def test_nginx_balances_the_compose_replicas_round_robin_with_no_affinity():
    """nginx.conf's upstream lists exactly the compose gateway services, with no ip_hash, hash or sticky."""
    text = files.NGINX.read_text()
    assert files.nginx_upstream_servers(text) == [f"{name}:{files.GATEWAY_PORT}" for name in files.GATEWAYS]
    assert not re.search(r"^\s*(ip_hash|hash|sticky|least_conn)\b", text, flags=re.M)
    assert "include mcp-proxy.conf;" in text
    proxy = files.NGINX_PROXY.read_text()
    for directive in ("proxy_buffering off;", "proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;"):
        assert directive in proxy


def test_the_compose_gateways_start_after_the_migrations_and_share_one_configuration():
    """Every service of the image waits for the one-shot migrate service to succeed; the two replicas are the same
    service twice; the gateways run the image's daphne command; nginx waits for healthy replicas."""
    services = files.compose()["services"]
    assert services[files.GATEWAYS[0]] == services[files.GATEWAYS[1]]
    for name in (*files.GATEWAYS, files.WORKER, files.BEAT):
        assert services[name]["depends_on"][files.MIGRATE] == {"condition": "service_completed_successfully"}, name
        assert services[name]["environment"] == services[files.MIGRATE]["environment"], name
        assert services[name]["env_file"] == services[files.MIGRATE]["env_file"], name
    assert services[files.MIGRATE]["restart"] == "no"
    assert "migrate" in " ".join(files.service_command(files.MIGRATE))
    assert files.image_command()[:3] == ["python", "-m", "gateway_project.daphne_server"]
    assert "command" not in services[files.GATEWAYS[0]]
    assert services[files.GATEWAYS[0]]["environment"]["GATEWAY_SCHEDULER"] == "celery"
    assert all(
        services[files.NGINX_SERVICE]["depends_on"][name] == {"condition": "service_healthy"} for name in files.GATEWAYS
    )


def test_compose_runs_one_beat():
    """Beat ticks; two would tick twice: one service, not scaled."""
    services = files.compose()["services"]
    beats = [name for name, service in services.items() if "beat" in service.get("command", [])]
    assert beats == [files.BEAT]
    assert services[files.BEAT].get("deploy", {}).get("replicas", 1) == 1


def test_the_example_settings_hold_placeholders_only():
    """deploy/env.example and the Secret example carry "change-me" wherever a secret goes."""
    example = dict(
        line.split("=", 1) for line in files.ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")
    )
    secret_keys = [key for key in example if re.search(r"PASSWORD|SECRET|KEYS?$", key)]
    assert secret_keys, example
    assert all(example[key].startswith("change-me") for key in secret_keys), example
    secret = yaml.safe_load((files.K8S / "secret.example.yaml").read_text())
    assert all("change-me" in value for key, value in secret["stringData"].items() if "USERNAME" not in key)


def _pods(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        key: document["spec"]["template"]["spec"]
        for key, document in objects.items()
        if document["kind"] in ("Deployment", "Job")
    }


def test_the_kubernetes_pods_run_unprivileged_with_read_only_roots_and_bounded_resources():
    pods = _pods(files.k8s_documents())
    assert set(pods) == {
        "Deployment/mcp-gateway",
        "Deployment/mcp-gateway-worker",
        "Deployment/mcp-gateway-beat",
        "Job/mcp-gateway-migrate",
    }
    for key, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, key
        assert pod["automountServiceAccountToken"] is False, key
        for container in pod.get("initContainers", []) + pod["containers"]:
            where = f"{key} {container['name']}"
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"], where
            assert {"configMapRef": {"name": "mcp-gateway-config"}} in container["envFrom"], where
            assert {"secretRef": {"name": "mcp-gateway-secrets"}} in container["envFrom"], where


def test_the_kubernetes_gateway_probes_ready_and_health_with_a_host_it_allows():
    """Readiness on /ready, liveness on /health, each with a Host header ALLOWED_HOSTS lists (Django answers 400
    to any other before a view runs); the same host the image's HEALTHCHECK would choose is allowed."""
    objects = files.k8s_documents()
    allowed = objects["ConfigMap/mcp-gateway-config"]["data"]["ALLOWED_HOSTS"].split(",")
    (gateway,) = _pods({"Deployment/mcp-gateway": objects["Deployment/mcp-gateway"]}).values()
    container = gateway["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        (header,) = container[probe]["httpGet"]["httpHeaders"]
        assert header["name"] == "Host"
        assert header["value"] in allowed, (probe, header, allowed)
    assert probe_host(",".join(allowed)) in allowed
    assert objects["Service/mcp-gateway"]["spec"]["sessionAffinity"] == "None"
    annotations = objects["Ingress/mcp-gateway"]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert not any("affinity" in name for name in annotations)


def test_kubernetes_runs_exactly_one_beat_and_scales_the_gateway_on_cpu():
    objects = files.k8s_documents()
    beat = objects["Deployment/mcp-gateway-beat"]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}  # a rollout never runs two at once
    hpa = objects["HorizontalPodAutoscaler/mcp-gateway"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "mcp-gateway"
    assert [metric["resource"]["name"] for metric in hpa["metrics"]] == ["cpu"]
    assert "replicas" not in objects["Deployment/mcp-gateway"]["spec"]  # the HPA owns it
    assert (
        objects["PodDisruptionBudget/mcp-gateway"]["spec"]["selector"]
        == (objects["Deployment/mcp-gateway"]["spec"]["selector"])
    )


def test_the_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((files.K8S / "kustomization.yaml").read_text())
    manifests = {path.name for path in files.K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)


def test_the_healthcheck_names_a_host_allowed_hosts_accepts():
    assert probe_host("gateway.example.com, localhost") == "gateway.example.com"
    assert probe_host(".example.com") == "example.com"
    assert probe_host("*") == "localhost"
    assert probe_host("") == "localhost"


def _exec_start(unit: str) -> list[str]:
    text = (files.DEPLOY / "systemd" / unit).read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


def test_the_systemd_units_run_the_commands_of_the_image_and_of_compose():
    """One gateway process per instance port: the image's CMD on 127.0.0.1:%i; the worker and beat as compose runs
    them (the venv's programs instead of the image's PATH)."""
    venv = "/opt/mcp-gateway/.venv/bin/"
    gateway = files.image_command()
    gateway[gateway.index("-b") + 1] = "127.0.0.1"
    gateway[gateway.index("-p") + 1] = "%i"
    assert _exec_start("mcp-gateway@.service") == [venv + gateway[0], *gateway[1:]]
    for unit, service in (("mcp-gateway-worker.service", files.WORKER), ("mcp-gateway-beat.service", files.BEAT)):
        command = files.service_command(service)
        assert _exec_start(unit) == [venv + command[0], *command[1:]], unit


def test_the_gateways_trust_the_scheme_header_only_where_their_proxy_sets_it():
    """SECURE_PROXY_SSL_HEADER names X-Forwarded-Proto, which nginx-proxy.conf (compose) and ingress-nginx
    (Kubernetes) overwrite on every request: a client cannot claim https through them. The embedded default trusts
    no header (gateway_project/settings.py)."""
    proxy = files.NGINX_PROXY.read_text()
    assert re.search(r"^proxy_set_header X-Forwarded-Proto \$scheme;$", proxy, flags=re.M)
    environment = files.compose()["services"][files.GATEWAYS[0]]["environment"]
    assert environment["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto"
    config = files.k8s_documents()["ConfigMap/mcp-gateway-config"]["data"]
    assert config["SECURE_PROXY_SSL_HEADER"] == "X-Forwarded-Proto"
    # The Ingress serves TLS: the admin's cookies go over https only.
    assert config["SESSION_COOKIE_SECURE"] == config["CSRF_COOKIE_SECURE"] == "true"


def test_nginx_keeps_enough_idle_connections_and_drops_them_before_daphne_does():
    """A burst of 256 concurrent requests (the benchmark's highest concurrency) reuses pooled connections, the pool
    stays well inside the nginx image's 1024 worker_connections, and an idle connection is let go before daphne's
    60 s (reusing one daphne is closing fails the request)."""
    text = files.NGINX.read_text()
    (keepalive,) = re.findall(r"^\s*keepalive\s+(\d+);", text, flags=re.M)
    (timeout,) = re.findall(r"^\s*keepalive_timeout\s+(\d+)s;", text, flags=re.M)
    assert 256 <= int(keepalive) <= 512
    assert int(timeout) < 60
