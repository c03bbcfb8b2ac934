"""What policy sees of a tool call (issue 9, section 5): URLs as the browser parses them, paths as
pcd resolves them, commands with their real program, argv and whether a shell decides. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from corral.access import Controls, NamedPolicy, PolicyEngine, ToolAction, reads_program, tool_args
from corral.domain.urls import normalize_host_name, parse_web_url
from corral.errors import InvalidInputError
from corral.lifecycle.tools import TOOLS, parse_args

TOOL_ACTIONS = [ToolAction(t.name, t.input_tool) for t in TOOLS.values()]


@pytest.mark.parametrize(
    ("url", "scheme", "host"),
    [
        # WHATWG: a backslash ends the authority of an http URL, so the host is evil
        ("http://evil\\@allowed/", "http", "evil"),
        ("http://allowed@evil/", "http", "evil"),
        ("HTTP://ALLOWED./x", "http", "allowed"),
        ("https://Bücher.DE/", "https", "xn--bcher-kva.de"),
        ("http://%65vil/", "http", "evil"),
        ("http://0x7f.1/", "http", "127.0.0.1"),
        ("https://Docs.Example.com:8443/a", "https", "docs.example.com"),
        ("file:///etc/passwd", "file", ""),
        ("javascript:alert(1)", "javascript", ""),
        ("JavaScript:alert(1)", "javascript", ""),
    ],
)
def test_urls_are_parsed_as_the_browser_does(url: str, scheme: str, host: str) -> None:
    parsed = parse_web_url(url)
    assert (parsed.scheme, parsed.host) == (scheme, host)
    assert tool_args("open_url", {"url": url})["host"] == host
    assert tool_args("open_url", {"url": url})["scheme"] == scheme


def test_the_browser_gets_the_url_policy_read() -> None:
    # the serialised URL names the same host for any WHATWG parser (Chromium included)
    href = parse_web_url("http://evil\\@allowed/").href
    assert href == "http://evil/@allowed/" and parse_web_url(href).host == "evil"


@pytest.mark.parametrize("url", ["not a url", "//no-scheme/", "http://a b/", "http://x/\n"])
def test_what_is_no_url_is_refused(url: str) -> None:
    with pytest.raises(InvalidInputError, match="not a valid URL"):
        parse_web_url(url)
    assert tool_args("open_url", {"url": url})["scheme"] == ""


def test_allowed_hosts_meet_urls_in_one_spelling() -> None:
    assert normalize_host_name(" Bücher.DE. ") == "xn--bcher-kva.de"
    assert normalize_host_name("ALLOWED.") == "allowed"
    for bad in ("a/b", "x:80", "evil@x", "", "http://x"):
        with pytest.raises(InvalidInputError, match="not a host name"):
            normalize_host_name(bad)
    controls = Controls.from_json({"allowed_hosts": ["Bücher.de.", "ALLOWED"]})
    assert controls.allowed_hosts == ("allowed", "xn--bcher-kva.de")
    assert Controls.from_annotations({"allowed_hosts": "Allowed."}).allowed_hosts == ("allowed",)


def test_exemptions_come_from_permits_only() -> None:
    granted = Controls.from_annotations(
        {"allow_alongside": "run_command", "allow_schemes": "File:"}
    )
    assert granted.allow_alongside == ("run_command",) and granted.allow_schemes == ("file",)
    assert Controls.from_json(granted.to_json(), stored=True) == granted
    with pytest.raises(InvalidInputError, match="unknown session control"):
        Controls.from_json({"allow_alongside": ["run_command"]})  # an acquire request
    with pytest.raises(InvalidInputError, match="@allow_alongside"):
        Controls.from_annotations({"allow_alongside": "read_file"})
    # merging: restrictions and exemptions (each a permit's) add up
    merged = Controls(no_clipboard=True).merge(granted)
    assert merged.no_clipboard and merged.allow_alongside == ("run_command",)
    # the shown form is unchanged for sessions without exemptions
    assert set(Controls(no_clipboard=True).to_json()) == {
        "read_only",
        "no_clipboard",
        "no_file_transfer",
        "allowed_hosts",
    }


@pytest.mark.parametrize(
    "path", [".ssh/id_rsa", "~/.ssh/id_rsa", "./.ssh//id_rsa", "/home/user/x/../.ssh/id_rsa"]
)
def test_paths_are_resolved_as_pcd_does(path: str) -> None:
    assert tool_args("read_file", {"path": path})["path"] == "/home/user/.ssh/id_rsa"
    assert tool_args("read_file", {"path": "~"})["path"] == "/home/user"
    assert tool_args("read_file", {"path": "/tmp/a"})["path"] == "/tmp/a"


def _cmd(**args: Any) -> dict[str, Any]:
    return tool_args("run_command", args)


def test_argv_gives_the_program_and_its_path() -> None:
    got = _cmd(argv=["/usr/bin/curl", "-s", "https://x/"])
    assert got["program"] == "curl" and got["program_path"] == "/usr/bin/curl"
    assert got["argv"] == ["/usr/bin/curl", "-s", "https://x/"] and got["argc"] == 3
    assert got["shell"] is False and got["command"] == "/usr/bin/curl -s https://x/"
    assert _cmd(argv=["/usr/bin/../bin/./curl"])["program_path"] == "/usr/bin/curl"
    assert _cmd(argv=["bin/tool"])["program_path"] == "/home/user/bin/tool"  # pcd's cwd
    bare = _cmd(argv=["curl"])
    assert bare["program"] == "curl" and bare["program_path"] == "curl"


@pytest.mark.parametrize(
    "argv",
    [
        ["/usr/bin/env", "curl", "x"],
        ["env", "FOO=1", "curl"],
        ["sh", "-c", "curl x"],
        ["/bin/bash", "-c", "curl x"],
        ["xargs", "curl"],
        ["nice", "-n", "5", "curl"],
        ["timeout", "5", "curl"],
        ["busybox", "wget"],
        ["python3", "-c", "import os; os.system('curl x')"],
    ],
)
def test_programs_that_run_others_count_as_a_shell(argv: list[str]) -> None:
    assert _cmd(argv=argv)["shell"] is True


@pytest.mark.parametrize(
    ("line", "program"),
    [
        ("FOO=1 curl x", "curl"),
        ("/usr/bin/env curl x", "env"),
        ("sh -c 'curl x'", "sh"),
        ("true | curl x", "true"),
        ("curl x", "curl"),
    ],
)
def test_a_shell_line_is_shell_mode(line: str, program: str) -> None:
    got = _cmd(command=line)
    assert got["shell"] is True and got["program"] == program and got["command"] == line


def test_policies_that_read_the_program_are_found() -> None:
    engine = PolicyEngine(TOOL_ACTIONS)

    def compiled(text: str) -> bool:
        return reads_program(engine.compile([NamedPolicy("p", text)], 1).statements.values())

    head = 'forbid (principal, action == Action::"run_command", resource)\n'

    def has(attr: str) -> str:
        return f"when {{ context has args && context.args has {attr} && "

    assert compiled(head + has("program") + 'context.args.program == "curl" };')
    assert compiled(head + has("command") + 'context.args.command like "*curl*" };')
    assert compiled(head + has("program_path") + 'context.args.program_path like "/tmp/*" };')
    assert compiled(head + has("argv") + 'context.args.argv.contains("-o") };')
    assert not compiled(head + has("program") + "true };")
    assert not compiled(head + has("argc") + "context.args.argc > 3 };")
    assert not compiled('permit (principal, action == Action::"screenshot", resource);')


def test_run_command_takes_argv_or_a_shell_line() -> None:
    assert parse_args("run_command", {"argv": ["ls", "-l"]})[1].model_dump()["argv"] == [
        "ls",
        "-l",
    ]
    bad: dict[str, Any]
    for bad in ({}, {"argv": ["ls"], "command": "ls"}, {"argv": []}, {"argv": [""]}):
        with pytest.raises(InvalidInputError, match="run_command"):
            parse_args("run_command", bad)
