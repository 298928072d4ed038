"""The deployment files of deploy/ as data, for the tests: the compose file, the Dockerfile's instructions, the
Kubernetes manifests, and deploy/nginx.conf made to run on this machine's loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
NGINX = DEPLOY / "nginx.conf"
NGINX_PROXY = DEPLOY / "nginx-proxy.conf"
ENV_EXAMPLE = DEPLOY / "env.example"
K8S = DEPLOY / "k8s"

# The compose services, by role (the names the docs and nginx.conf use).
GATEWAYS = ("gateway-1", "gateway-2")
MIGRATE, WORKER, BEAT, NGINX_SERVICE = "migrate", "worker", "beat", "nginx"
# The port the image's daphne listens on, and nginx's, inside the containers.
GATEWAY_PORT, NGINX_PORT = 8000, 8080


def compose() -> dict[str, Any]:
    """deploy/compose.yaml, anchors and merge keys resolved."""
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage of deploy/Dockerfile, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stage: list[tuple[str, str]] = []
    for entry in logical:
        instruction, _, arguments = entry.partition(" ")
        if instruction.upper() == "FROM":
            stage = []
        stage.append((instruction.upper(), arguments.strip()))
    return stage


def image_command() -> list[str]:
    """The image's CMD (exec form)."""
    (arguments,) = [arguments for instruction, arguments in dockerfile_instructions() if instruction == "CMD"]
    return json.loads(arguments)


def image_healthcheck() -> list[str]:
    """The command of the image's HEALTHCHECK (exec form, after its options)."""
    (arguments,) = [arguments for instruction, arguments in dockerfile_instructions() if instruction == "HEALTHCHECK"]
    return json.loads(arguments.split(" CMD ", 1)[1])


def service_command(service: str) -> list[str]:
    """What a compose service runs: its command, or the image's CMD when it names none."""
    command = compose()["services"][service].get("command")
    return list(command) if command else image_command()


def k8s_documents() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s, by "Kind/name" (kustomization.yaml apart)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                objects[f"{document['kind']}/{document['metadata']['name']}"] = document
    return objects


def nginx_upstream_servers(text: str) -> list[str]:
    """The host:port of each server of the upstream block(s) of an nginx configuration."""
    servers = []
    for block in re.findall(r"upstream\s+\S+\s*\{(.*?)\}", text, flags=re.S):
        servers += re.findall(r"^\s*server\s+(\S+?)(?:\s+[^;]*)?;", block, flags=re.M)
    return servers


def loopback_nginx_template() -> str:
    """deploy/nginx.conf inside a whole nginx configuration for this machine, as a template of
    tests/replicas/conftest.running_nginx: the replicas' container names become 127.0.0.1:{port_a} and
    :{port_b}, `listen 8080` becomes 127.0.0.1:{port}, and Docker's DNS resolver (and `resolve`, which needs it)
    go; everything else is the file as it is. The access log names the replica of each request."""
    text = NGINX.read_text().replace("{", "{{").replace("}", "}}")
    text, resolvers = re.subn(r"(?m)^resolver\s[^;]*;\n", "", text)
    assert resolvers == 1, "deploy/nginx.conf: expected one resolver line (Docker's DNS)"
    for name, key in zip(GATEWAYS, ("port_a", "port_b"), strict=True):
        text, found = re.subn(
            rf"server\s+{re.escape(name)}:{GATEWAY_PORT}(\s+resolve)?;", f"server 127.0.0.1:{{{key}}};", text
        )
        assert found == 1, f"deploy/nginx.conf: expected one `server {name}:{GATEWAY_PORT}` line"
    text, listens = re.subn(rf"listen\s+{NGINX_PORT};", "listen 127.0.0.1:{port};", text)
    assert listens == 1, f"deploy/nginx.conf: expected one `listen {NGINX_PORT};`"
    return (
        "{user}worker_processes 1;\n"
        "pid {dir}/nginx.pid;\n"
        "error_log {dir}/error.log warn;\n"
        "events {{ worker_connections 1024; }}\n"
        "http {{\n"
        "    log_format topology '$request_method $request_uri $status $upstream_addr';\n"
        "    access_log {dir}/access.log topology;\n"
        "    client_body_temp_path {dir}/tmp/body;\n"
        "    proxy_temp_path {dir}/tmp/proxy;\n"
        "    fastcgi_temp_path {dir}/tmp/fastcgi;\n"
        "    uwsgi_temp_path {dir}/tmp/uwsgi;\n"
        "    scgi_temp_path {dir}/tmp/scgi;\n" + text + "}}\n"
    )
