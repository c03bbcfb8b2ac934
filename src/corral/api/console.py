"""HTTP adapter of the web console's sign-in: login form, OIDC round trip, landing page, logout.

Thin: every decision is `corral.console.service.ConsoleService`'s; this renders small HTML
pages and sets cookies. The session cookie is HttpOnly, SameSite=Strict, Path=/, Secure on
https; the pending-login cookie is SameSite=Lax (it must come back on the provider's
cross-site redirect), HttpOnly, limited to the OIDC paths and ten minutes.
"""

from __future__ import annotations

import asyncio
import html

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from corral.api.authn import principal_of
from corral.api.console_auth import LOGIN_STATE_COOKIE, SESSION_COOKIE, same_origin
from corral.console.service import ConsoleLoginError, ConsoleService
from corral.domain.policy import Approval, ApprovalState
from corral.domain.text import visible
from corral.errors import InvalidInputError, PermissionDeniedError
from corral.gate import Gate, operation
from corral.gate.operations import DecideApproval, ListApprovals, ListSessions
from corral.identity.errors import AuthError
from corral.identity.token_endpoint import RateLimitedError

__all__ = ["include_console"]

MAX_LOGIN_FORM_BYTES = 8 * 1024
# No caching, no framing, no referrer (a callback URL carries a code), scripts from nowhere.
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
_STYLE = (
    "body{font:15px sans-serif;max-width:40em;margin:3em auto;color:#222}"
    "input{display:block;margin:.3em 0 1em;padding:.4em;width:20em}"
    ".err{color:#a00}table{border-collapse:collapse}td,th{padding:.3em .8em;text-align:left}"
)


def _text(value: object) -> str:
    """Untrusted text (an agent's arguments, names, messages) for HTML: controls, bidi overrides
    and invisible characters shown as escapes (`\\u202e`), then HTML-escaped."""
    return html.escape(visible(str(value)))


def _page(title: str, body: str, status: int = 200, refresh: str | None = None) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="0;url={html.escape(refresh)}">' if refresh else ""
    text = (
        f'<!doctype html><html><head><meta charset="utf-8">{meta}'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status, headers=_HEADERS)


def _login_form(providers: list[str], error: str | None = None, status: int = 200) -> HTMLResponse:
    err = f'<p class="err">{_text(error)}</p>' if error else ""
    links = "".join(
        f'<li><a href="/console/oidc/{html.escape(p)}/start">Sign in with {html.escape(p)}</a></li>'
        for p in providers
    )
    body = (
        f'{err}<form method="post" action="/console/login">'
        '<label>User <input name="username" autocomplete="username" required autofocus></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<label>Code (if you use an authenticator app) <input name="code" '
        'inputmode="numeric" autocomplete="one-time-code"></label>'
        "<button>Sign in</button></form>" + (f"<ul>{links}</ul>" if links else "")
    )
    return _page("Corral console: sign in", body, status)


def _approvals_table(approvals: list[Approval]) -> str:
    """The pending requests the signed-in user may answer, each with approve / deny buttons."""
    if not approvals:
        return "<h2>Approvals</h2><p>No requests are waiting for you.</p>"
    rows = "".join(
        "<tr><td>{agent}</td><td>{action}</td><td>{detail}</td><td>{until}</td><td>"
        '<form method="post" action="/console/approvals/{aid}/approve"><button>Approve</button>'
        '</form><form method="post" action="/console/approvals/{aid}/deny"><button>Deny</button>'
        "</form></td></tr>".format(
            aid=_text(a.id),
            agent=_text(a.agent_id),
            action=_text(f"{a.action} on {a.resource}"),
            detail=_text(", ".join(f"{k}={v}" for k, v in sorted(a.detail.items()))),
            until=_text(a.expires_at.isoformat(timespec="seconds")),
        )
        for a in approvals
    )
    return (
        "<h2>Approvals</h2><table><tr><th>Agent</th><th>Request</th><th>Arguments</th>"
        f"<th>Answer by</th><th></th></tr>{rows}</table>"
    )


def _set_session(answer: Response, token: str, max_age: int, secure: bool) -> None:
    answer.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


_LIST_SESSIONS = operation("list_sessions")
_LIST_APPROVALS = operation("list_approvals")
_DECIDE_APPROVAL = operation("decide_approval")


def console_router(console: ConsoleService, gate: Gate) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    def secure(request: Request) -> bool:
        """Secure cookies when the browser talks https (directly, or to a public https URL)."""
        return request.url.scheme == "https" or console.issuer.startswith("https://")

    @router.get("/console/login")
    async def login_form() -> HTMLResponse:
        return _login_form(await asyncio.to_thread(console.login_providers))

    @router.post("/console/login")
    async def login(request: Request) -> Response:
        providers = await asyncio.to_thread(console.login_providers)
        # Login CSRF: a browser's POST carries Origin; a foreign one is refused.
        if request.headers.get("origin") and not same_origin(request.scope, console.issuer):
            return _page("Corral console", "<p>Cross-origin sign-in refused.</p>", 403)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_LOGIN_FORM_BYTES:
            return _login_form(providers, "sign-in form too large", 413)
        form = await request.form(max_fields=8, max_files=0)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        address = request.client.host if request.client else None
        try:
            issued = await asyncio.to_thread(
                console.password_login,
                fields.get("username", ""),
                fields.get("password", ""),
                fields.get("code", ""),
                address=address,
            )
        except RateLimitedError as exc:
            answer = _login_form(providers, "too many sign-in attempts: wait a little", 429)
            answer.headers["Retry-After"] = str(exc.retry_after_s)
            return answer
        except ConsoleLoginError as exc:
            return _login_form(providers, exc.message, 401)
        done = RedirectResponse("/console", status_code=303, headers=_HEADERS)
        _set_session(done, issued.access_token, issued.expires_in, secure(request))
        return done

    @router.get("/console/oidc/{provider}/start")
    async def oidc_start(provider: str, request: Request) -> Response:
        try:
            start = await asyncio.to_thread(console.oidc_start, provider)
        except AuthError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            return _page("Corral console", f"<p>{_text(exc.message + hint)}</p>", 400)
        answer = RedirectResponse(start.location, status_code=303, headers=_HEADERS)
        answer.set_cookie(
            LOGIN_STATE_COOKIE,
            start.state_cookie,
            max_age=start.max_age,
            path="/console/oidc/",
            secure=secure(request),
            httponly=True,
            samesite="lax",
        )
        return answer

    @router.get("/console/oidc/{provider}/callback")
    async def oidc_callback(provider: str, request: Request) -> Response:
        query = request.query_params
        try:
            issued = await asyncio.to_thread(
                lambda: console.oidc_finish(
                    provider,
                    state_cookie=request.cookies.get(LOGIN_STATE_COOKIE),
                    state=query.get("state"),
                    code=query.get("code"),
                    error=query.get("error"),
                )
            )
        except ConsoleLoginError as exc:
            answer: Response = _page(
                "Corral console",
                f'<p class="err">{_text(exc.message)}</p>'
                '<p><a href="/console/login">Sign in again</a></p>',
                401,
            )
        else:
            # A page, not a redirect: the browser arrived here from the provider's site, and a
            # SameSite=Strict cookie is only sent on a navigation that starts on our own page.
            answer = _page(
                "Corral console",
                '<p>Signed in. <a href="/console">Continue to the console</a></p>',
                refresh="/console",
            )
            _set_session(answer, issued.access_token, issued.expires_in, secure(request))
        answer.delete_cookie(LOGIN_STATE_COOKIE, path="/console/oidc/")
        return answer

    @router.get("/console")
    async def landing(request: Request) -> HTMLResponse:
        who = principal_of(request)
        if who is None:
            raise PermissionDeniedError("no authenticated principal for this request")
        sessions = await gate.handle(
            who, _LIST_SESSIONS, None, ListSessions.model_construct(active=True)
        )
        rows = "".join(
            "<tr><td>{sid}</td><td>{pool}</td><td>{created}</td>"
            '<td><a href="/sessions/{sid}/viewer">view</a></td></tr>'.format(
                sid=_text(s.id),
                pool=_text(s.pool),
                created=_text(s.created_at.isoformat(timespec="seconds")),
            )
            for s in sessions
        )
        table = (
            f"<table><tr><th>Session</th><th>Pool</th><th>Since</th><th></th></tr>{rows}</table>"
            if rows
            else "<p>No active sessions you can see.</p>"
        )
        pending = ListApprovals.model_construct(state=ApprovalState.PENDING.value)
        approvals = await gate.handle(who, _LIST_APPROVALS, None, pending)
        body = (
            f"<p>Signed in as {_text(who.id)}.</p>{table}{_approvals_table(approvals)}"
            '<form method="post" action="/console/logout"><button>Sign out</button></form>'
        )
        return _page("Corral console", body)

    @router.post("/console/approvals/{approval_id}/{answer}")
    async def decide(approval_id: str, answer: str, request: Request) -> Response:
        """A sponsor's answer from the console (a same-origin POST with the session cookie):
        the same `decide_approval` as `corral approvals` and REST, so the same policy decides."""
        who = principal_of(request)
        if who is None:
            raise PermissionDeniedError("no authenticated principal for this request")
        if answer not in ("approve", "deny"):
            raise InvalidInputError(
                f"unknown answer {answer!r}", hint="post to .../approve or .../deny"
            )
        args = DecideApproval.model_construct(approve=answer == "approve")
        await gate.handle(who, _DECIDE_APPROVAL, approval_id, args)
        return RedirectResponse("/console", status_code=303, headers=_HEADERS)

    @router.post("/console/logout")
    async def logout(request: Request) -> Response:
        await asyncio.to_thread(console.logout, request.cookies.get(SESSION_COOKIE))
        answer = RedirectResponse("/console/login", status_code=303, headers=_HEADERS)
        answer.delete_cookie(SESSION_COOKIE, path="/")
        return answer

    return router


def include_console(app: FastAPI, console: ConsoleService, gate: Gate) -> None:
    """Serve the console's sign-in pages on `app`."""
    app.include_router(console_router(console, gate))
