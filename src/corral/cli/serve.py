"""`corral up`: serve REST and MCP on one address, with embedded defaults."""

from __future__ import annotations

import json
from ipaddress import ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.cli._common import Progress, check_data_folder, err_console, handle_errors, progress
from corral.errors import InvalidInputError

if TYPE_CHECKING:
    import uvicorn

    from corral.store import Store

DEFAULT_IMAGE = "desktop"
DEFAULT_POOL = "default"


def _ensure_image(name: str) -> None:
    from corral.errors import ImageNotFoundError
    from corral.runtime.images import ImageStore, build_image

    try:
        ImageStore().get(name)
    except ImageNotFoundError:
        with progress(f"image {name} is missing: building it (first run only, minutes)") as shown:
            build_image(name, progress=shown.log)


STARTUP_FAILURE = 3  # uvicorn's exit code when the app cannot start


def _serve(config: uvicorn.Config, base: str) -> None:
    """uvicorn.run, plus progress on stderr while the control plane starts (store migration,
    PC recovery, the default pool) and one line once Corral answers."""
    import uvicorn

    starting = Progress("starting Corral: store, PC recovery, pools")

    class Announcing(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            starting.stop()
            if not self.should_exit:
                err_console.print(f"[green]ready[/] on {base} in {starting.elapsed():.1f} s")

    server = Announcing(config)
    starting.start()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        starting.stop()
    if not server.started:
        raise typer.Exit(STARTUP_FAILURE)


def _bootstrap_admin(store: Store, token_endpoint: str) -> Path | None:
    """First run: with no admin in the directory, create user `admin` (role admin) with a key
    credential in `<data dir>/admin.json` (0600). Returns the file written, if any."""
    from corral.config import paths
    from corral.identity.directory import Directory, write_credential

    store.migrate()
    if store.admin_exists():
        return None
    directory = Directory(store)
    user = directory.create_user("admin", roles=["admin"])
    path = paths().data / "admin.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cred = directory.create_user_credential(user.id, token_endpoint)
    return write_credential(path, cred, overwrite=True)


def proxy_settings(trusted: list[str]) -> dict[str, Any]:
    """uvicorn's forwarded-header settings: believe X-Forwarded-For/-Proto only from the
    proxies the operator named (uvicorn's own default trusts loopback, so any local process
    could claim any client address to policies and rate limits)."""
    networks = []
    for value in trusted:
        try:
            networks.append(str(ip_network(value.strip(), strict=False)))
        except ValueError:
            raise InvalidInputError(
                f"--trusted-proxy {value!r} is not an IP address or CIDR",
                hint="give the proxy's address, e.g. --trusted-proxy 10.0.0.5 or 10.0.0.0/24",
            ) from None
    return {"proxy_headers": bool(networks), "forwarded_allow_ips": networks}


@handle_errors
def up(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8420,
    image: Annotated[str, typer.Option(help="image of the default pool")] = DEFAULT_IMAGE,
    warm: Annotated[int, typer.Option(help="warm PCs in the default pool")] = 2,
    default_pool: Annotated[
        bool, typer.Option(help="create the `default` pool on first run")
    ] = True,
    keep_pcs: Annotated[bool, typer.Option(help="leave PCs running on exit")] = False,
    insecure_listen: Annotated[
        bool,
        typer.Option(help="allow a non-loopback --host (plain HTTP: put TLS in front of it)"),
    ] = False,
    console_session_hours: Annotated[
        float, typer.Option(help="how long a console sign-in lasts", min=0.05, max=24 * 7)
    ] = 8.0,
    approval_wait: Annotated[
        float,
        typer.Option(
            help="seconds a tool call held for a sponsor's approval waits for the answer "
            "before it answers 'pending' (REST callers may ask with Prefer: wait=N)",
            min=0,
            max=300,
        ),
    ] = 0.0,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="a reverse proxy (address or CIDR) whose X-Forwarded-For/-Proto to believe; "
            "repeatable. Default: none, the client address is the TCP peer",
        ),
    ] = None,
    dpop_nonce: Annotated[
        bool,
        typer.Option(help="demand server-issued DPoP nonces in every proof (RFC 9449 section 8)"),
    ] = False,
) -> None:
    """Serve Corral (REST, MCP) until Ctrl-C; first run builds the default image and pool."""
    import uvicorn

    from corral.api.app import create_app
    from corral.audit.checkpoints import LogKeys
    from corral.audit.service import AuditService
    from corral.config import audit_settings, paths
    from corral.console.service import ConsoleSettings
    from corral.domain.models import PoolSpec
    from corral.identity.directory import Directory
    from corral.identity.event_emitter import EventDelivery, EventEmitter
    from corral.identity.event_receiver import EventReceiver, federation_keys
    from corral.identity.keys import SigningKeyring
    from corral.identity.nonces import NonceSource
    from corral.identity.token_endpoint import AuthService
    from corral.lifecycle.control import ControlPlane
    from corral.runtime.pcs import PCRuntime
    from corral.store import Store

    loopback = host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not insecure_listen:
        raise InvalidInputError(
            f"refusing to listen on {host}: Corral serves plain HTTP (no TLS yet)",
            hint="keep the default 127.0.0.1, or pass --insecure-listen behind a TLS proxy",
        )
    proxy = proxy_settings(trusted_proxy or [])
    if default_pool:
        _ensure_image(image)
    base = f"http://{host}:{port}"
    check_data_folder()  # before the store opens: fixes or refuses, and says so
    store = Store()
    keyring = SigningKeyring.load_or_create(paths().data / "signing-keys.json")
    # Shared Signals (docs/events.md): CAEP events out through the outbox, in at /ssf/events.
    delivery = EventDelivery(store)
    emitter = EventEmitter(store, issuer=base, keyring=lambda: keyring, on_queued=delivery.wake)
    control = ControlPlane(store, PCRuntime(), events=emitter, approval_wait_s=approval_wait)
    # Every Gate call is recorded in the tamper-evident log (docs/audit.md).
    settings = audit_settings()  # CORRAL_AUDIT_* (docs/audit.md)
    audit = AuditService.open(store, LogKeys.load(settings=settings), preview=settings.preview)
    emitter.on_emitted = audit.recorder.note_security_out  # security events out and in

    admin_file = _bootstrap_admin(store, f"{base}/v1/token")
    auth = AuthService(
        store,
        keyring,
        issuer=base,
        token_url=f"{base}/v1/token",
        nonces=NonceSource() if dpop_nonce else None,
    )
    receiver = EventReceiver(
        store,
        Directory(store, events=emitter),
        control,
        audience=base,
        keys_for=federation_keys(auth.federation),
    )
    receiver.on_applied = audit.recorder.note_security_in
    pools = [PoolSpec(DEFAULT_POOL, image, warm=warm, max=max(10, warm))] if default_pool else []
    app = create_app(
        control,
        base_url=base,
        default_pools=pools,
        destroy_on_exit=not keep_pcs,
        allowed_hosts=None if loopback else ["*"],
        auth=auth,
        event_receiver=receiver,
        event_delivery=delivery,
        console_settings=ConsoleSettings(session_lifetime=console_session_hours * 3600),
        audit=audit,
    )
    # Every request needs a DPoP-bound token, which MCP clients do not make themselves:
    # `corral connect` holds the agent's credential and does it for them over stdio.
    config = {
        "mcpServers": {
            "corral": {
                "command": "corral",
                "args": ["connect", "--credential", "my-agent.json", "--url", base],
            }
        }
    }
    err_console.print(f"[green]Corral[/] on {base}  (store: {store.dialect})")
    err_console.print(f"  REST     {base}/v1/pools   (OpenAPI: {base}/openapi.json)")
    err_console.print(f"  MCP      {base}/mcp        (gateway: acquire_pc, tools, release_pc)")
    err_console.print(f"  Console  {base}/console    (users sign in with a password or OIDC)")
    err_console.print(
        "  an agent credential: corral agent create my-agent --sponsor admin -o my-agent.json"
    )
    err_console.print("  and a pool it may use: corral pool assign default --agent my-agent")
    err_console.print("  MCP client configuration:")
    print(json.dumps(config, indent=2), flush=True)
    if admin_file is not None:
        err_console.print(f"  admin credential written to {admin_file} (keep it secret)")
    err_console.print("Ctrl-C stops Corral and destroys its PCs.")
    _serve(uvicorn.Config(app, host=host, port=port, log_level="warning", **proxy), base)
