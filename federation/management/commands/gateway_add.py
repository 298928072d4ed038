"""Register an upstream MCP server: connect, read its catalog, store it."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from federation import services
from registry.audit import AuditedCommand
from registry.exceptions import CatalogError


def credentials_from_options(options: dict[str, Any]) -> dict[str, Any]:
    """auth_type and credentials from --bearer / --basic / --header."""
    given = [name for name in ("bearer", "basic", "header") if options.get(name)]
    if len(given) > 1:
        raise CommandError("Give one kind of credentials: --bearer, --basic or --header (repeatable).")
    if options.get("bearer"):
        return {"auth_type": "bearer", "credentials": {"token": options["bearer"]}}
    if options.get("basic"):
        username, sep, password = options["basic"].partition(":")
        if not sep:
            raise CommandError("--basic takes USER:PASSWORD.")
        return {"auth_type": "basic", "credentials": {"username": username, "password": password}}
    if options.get("header"):
        headers = {}
        for item in options["header"]:
            name, sep, value = item.partition(":")
            if not sep:
                raise CommandError(f"--header takes 'Name: value', got {item!r}.")
            headers[name.strip()] = value.strip()
        return {"auth_type": "headers", "credentials": {"headers": headers}}
    return {}


class Command(AuditedCommand):  # writes are audited as the OS user's
    help = (
        "Register an upstream MCP server NAME by --url (streamable-http, sse, websocket) or --command (stdio), "
        "read its tools, resources, templates and prompts into the catalog."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # `--arg -y` must pass "-y" to the program, which argparse would read as an option: glue
        # every --arg/--env to its value first.
        glued: list[str] = []
        items = iter(argv)
        for item in items:
            if item in ("--arg", "--env"):
                glued.append(f"{item}={next(items, '')}")
            else:
                glued.append(item)
        super().run_from_argv(glued)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--url")
        parser.add_argument("--transport", choices=["streamable-http", "sse", "websocket", "stdio"])
        parser.add_argument(
            "--era",
            choices=["auto", "legacy", "modern"],
            default="auto",
            help="MCP protocol era: auto (detect at every connection, the default), legacy (initialize handshake) "
            "or modern (2026-07-28, Streamable HTTP and stdio only).",
        )
        parser.add_argument("--command", dest="program", help="stdio: the program to start.")
        parser.add_argument("--arg", action="append", default=[], help="stdio: an argument (repeatable).")
        parser.add_argument("--env", action="append", default=[], help="stdio: KEY=VALUE (repeatable).")
        parser.add_argument("--cwd", default="")
        parser.add_argument("--description", default="")
        parser.add_argument("--bearer", help="Bearer token for the upstream.")
        parser.add_argument("--basic", help="USER:PASSWORD for the upstream.")
        parser.add_argument("--header", action="append", help="'Name: value' header for the upstream (repeatable).")
        parser.add_argument("--no-verify-tls", action="store_true", help="Do not verify the upstream's certificate.")
        parser.add_argument("--timeout", type=float, default=30.0, help="Seconds to wait for the upstream.")

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["url"]) == bool(options["program"]):
            raise CommandError("Give either --url URL or --command PROGRAM.")
        env = {}
        for item in options["env"]:
            key, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--env takes KEY=VALUE, got {item!r}.")
            env[key] = value
        data: dict[str, Any] = {"name": options["name"], "description": options["description"], "era": options["era"]}
        if options["program"]:
            data |= {
                "transport": "stdio",
                "command": options["program"],
                "args": options["arg"],
                "env": env,
                "cwd": options["cwd"],
            }
        else:
            data |= {"transport": options["transport"] or _guess_transport(options["url"]), "url": options["url"]}
        data |= credentials_from_options(options)
        if options["no_verify_tls"]:
            data["verify_tls"] = False
        try:
            gateway, report = services.gateway_add(data=data, timeout=options["timeout"])
        except CatalogError as exc:
            raise CommandError(exc.message) from None
        info = gateway.server_info
        self.stdout.write(
            f"Registered {gateway.name!r} ({info.get('name', '?')} {info.get('version', '')}, "
            f"protocol {gateway.protocol_version}, {'stateless' if gateway.detected_era == 'modern' else 'session'} "
            f"era): {report.summary()}."
        )
        for upstream, catalog in report.renamed.items():
            self.stdout.write(f"  {upstream} is listed as {catalog} (the name was taken)")
        for reason in report.skipped:
            self.stdout.write(f"  skipped {reason}")


def _guess_transport(url: str) -> str:
    if url.startswith(("ws://", "wss://")):
        return "websocket"
    if url.rstrip("/").endswith("/sse"):
        return "sse"
    return "streamable-http"
