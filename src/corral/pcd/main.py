"""Entry point: start the desktop, publish the socket, serve until SIGTERM or until Xvfb dies.

Startup is ordered for speed: Xvfb is spawned first, with only `os` imported; pcd imports the
rest and binds its socket while Xvfb boots, and renames the socket into place (the host's
readiness signal) as soon as Xvfb answers. The window manager starts without being waited for,
once the first request is answered, and python-xlib and Pillow are imported in the background.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from . import xvfb

USAGE = """usage: pcd [--socket PATH | --listen-fd N] [--display :N|auto] [--geometry WxHxD]
           [--wm PROGRAM|none]

  --socket    unix socket to serve on (default /run/corral/pcd.sock)
  --listen-fd serve the listening unix socket inherited as fd N instead (the host binds it
              where nothing in the PC can reach; --socket is then ignored)
  --display   X display for Xvfb; "auto" lets Xvfb pick a free one (default :0)
  --geometry  screen size and depth (default 1280x800x24)
  --wm        window manager to start, or "none" (default openbox)
"""
DEFAULTS = {
    "socket": "/run/corral/pcd.sock",
    "listen-fd": "",
    "display": ":0",
    "geometry": "1280x800x24",
    "wm": "openbox",
}
_XVFB_EXITED = 0  # byte on the wake-up pipe; signals write their own numbers


def parse_argv(argv: list[str]) -> dict[str, str]:
    """A tiny parser (argparse costs milliseconds we would rather not spend at boot)."""
    options = dict(DEFAULTS)
    rest = list(argv)
    while rest:
        flag = rest.pop(0)
        if flag in ("-h", "--help"):
            print(USAGE, end="")
            raise SystemExit(0)
        name, eq, value = flag.partition("=")
        key = name[2:] if name.startswith("--") else ""
        if key not in options:
            raise SystemExit(f"pcd: unknown option {flag!r}\n{USAGE}")
        if not eq:
            if not rest:
                raise SystemExit(f"pcd: {name} needs a value\n{USAGE}")
            value = rest.pop(0)
        options[key] = value
    return options


def home_dir() -> str:
    home = os.environ.get("HOME")
    if not home:
        import pwd

        home = pwd.getpwuid(os.getuid()).pw_dir
    return os.path.normpath(home)


def child_env(display: str) -> dict[str, str]:
    """The environment of everything pcd starts: its own, plus DISPLAY and a UTF-8 locale (so
    xterm and friends accept typed Unicode)."""
    env = dict(os.environ)
    env["DISPLAY"] = display
    if not (env.get("LC_ALL") or env.get("LANG")):
        env["LANG"] = "C.UTF-8"
    env["HOME"] = home_dir()
    return env


def _not_dumpable() -> None:
    """Agents run as pcd's own user, so without this they could open /proc/<pcd>/mem and make
    the real pcd answer what they like (or take its listener). Non-dumpable, pcd's /proc files
    belong to root of the PC's user namespace and ptrace-class access needs CAP_SYS_PTRACE,
    which nothing in a PC has. Children reset it at exec, so what pcd starts is unaffected."""
    import ctypes

    pr_set_dumpable = 4
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise SystemExit(f"pcd: prctl(PR_SET_DUMPABLE, 0) failed: errno {ctypes.get_errno()}")


def main(argv: list[str] | None = None) -> None:
    t0 = time.monotonic()
    _not_dumpable()
    options = parse_argv(sys.argv[1:] if argv is None else argv)
    try:
        geometry = xvfb.parse_geometry(options["geometry"])
    except ValueError as exc:
        raise SystemExit(f"pcd: {exc}") from None
    listen_fd = _listen_fd(options["listen-fd"])

    # 1. Xvfb first: it is the slowest part of boot.
    fbdir = xvfb.make_fbdir()
    try:
        xvfb_pid, display_fd = xvfb.spawn(options["display"], geometry, fbdir)
    except OSError as exc:
        raise SystemExit(f"pcd: cannot start Xvfb: {exc}") from None

    # 2. While it boots: set up signals, import the rest, bind the socket under a temp name.
    import signal
    import threading

    # Signals (and Xvfb's death) arrive as bytes on one pipe that the main thread reads.
    wake_r, wake_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)

    from . import server
    from .capture import Screen
    from .context import Context
    from .desktop import Desktop, log
    from .typer import Typer
    from .wmprobe import wait_until_managing
    from .xconn import XConn

    where = options["socket"] if listen_fd is None else f"inherited fd {listen_fd}"
    try:
        if listen_fd is None:
            listener, temp_path = server.bind(options["socket"])
        else:
            listener, temp_path = server.adopt(listen_fd), ""
    except OSError as exc:
        log(f"cannot listen on {where}: {exc}")
        _reap(xvfb_pid)
        raise SystemExit(1) from None
    try:
        display = xvfb.wait_ready(display_fd)
    except RuntimeError as exc:
        _reap(xvfb_pid)
        if not fbdir:
            log(str(exc))
            _unlink(temp_path)
            raise SystemExit(1) from None
        # Perhaps -fbdir failed (/dev/shm full?): screenshots can do without it.
        log(f"{exc}; retrying without -fbdir")
        import shutil

        shutil.rmtree(fbdir, ignore_errors=True)
        fbdir = None
        xvfb_pid, display_fd = xvfb.spawn(options["display"], geometry, fbdir)
        try:
            display = xvfb.wait_ready(display_fd)
        except RuntimeError as exc2:
            log(str(exc2))
            _reap(xvfb_pid)
            _unlink(temp_path)
            raise SystemExit(1) from None
    os.environ["DISPLAY"] = display
    env = child_env(display)
    desktop = Desktop(xvfb_pid, display, geometry, options["wm"], fbdir)
    xconn = XConn(display)
    ctx = Context(
        desktop=desktop,
        home=env["HOME"],
        env=env,
        x=xconn,
        screen=Screen(display, desktop.framebuffer),
        typer=Typer(xconn),
    )

    def xvfb_exited(code: int) -> None:
        os.write(wake_w, bytes([_XVFB_EXITED]))

    desktop.watch_xvfb(xvfb_exited)
    # 3. The window manager, not waited for (a thread learns when it manages windows), and
    #    started once the first request is answered (at most 0.5 s later): that answer is the
    #    host's readiness check, and on a PC's one CPU the WM's start would delay it.
    desktop.start_wm(
        env,
        lambda: wait_until_managing(xconn, desktop.wm_running, 10.0),
        after=ctx.answered,
        after_s=0.5,
    )
    # 4. Ready: the socket appears at its final path (an inherited one is served from now on:
    #    the host's first request waits in its backlog until then).
    if temp_path:
        server.publish(temp_path, options["socket"])
    log(
        f"ready on {where} (display {display}, {options['geometry']}) in "
        f"{(time.monotonic() - t0) * 1000:.0f} ms"
    )
    threading.Thread(
        target=server.serve_forever, args=(ctx, listener), name="accept", daemon=True
    ).start()
    threading.Thread(target=_warm_up, args=(ctx,), name="warm-up", daemon=True).start()

    code = _wait_for_end(wake_r)
    # 5. Shut down: stop serving, end what we started, remove the socket.
    ctx.stopping = True
    listener.close()
    ctx.children.kill_all()
    desktop.stop()
    if listen_fd is None:
        _unlink(options["socket"])
    sys.stderr.flush()
    os._exit(code)


def _listen_fd(value: str) -> int | None:
    """The inherited listening fd, made close-on-exec at once: Xvfb (spawned next) and every
    later child must never hold pcd's listener."""
    if not value:
        return None
    try:
        fd = int(value)
        os.set_inheritable(fd, False)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"pcd: --listen-fd {value!r} is not an open descriptor ({exc})") from None
    return fd


def _unlink(path: str) -> None:
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _reap(pid: int) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _wait_for_end(wake_r: int) -> int:
    """Block until SIGTERM/SIGINT/SIGHUP (exit 0) or Xvfb's death (exit 1)."""
    import select

    from .desktop import log

    data = os.read(wake_r, 64)
    # If Xvfb died because the whole group is being stopped (tini -g), our signal is on its
    # way: give it a moment so that case still exits 0.
    signalled = any(b != _XVFB_EXITED for b in data) or (
        bool(select.select([wake_r], [], [], 0.1)[0])
        and any(b != _XVFB_EXITED for b in os.read(wake_r, 64))
    )
    if not signalled:
        log("Xvfb exited; the desktop is gone, exiting")
        return 1
    log("stopping on signal")
    return 0


def _warm_up(ctx: object) -> None:
    """Pay python-xlib's and Pillow's import costs now rather than on the first request."""
    from .context import Context
    from .desktop import log
    from .keys import parse_keys
    from .ops_screen import warm_up as warm_screen

    assert isinstance(ctx, Context)
    ctx.answered.wait(0.5)
    try:
        ctx.x.warm()
        warm_screen(ctx)
        parse_keys("ctrl")
    except Exception as exc:  # only an optimization; real errors surface per request
        if not ctx.stopping:
            log(f"warm-up: {exc}")
