"""Which Debian mirror to build from: the one the host's own apt already uses.

Reading the host's sources (instead of naming a mirror in Corral) keeps builds on whatever mirror,
proxy or snapshot the operator chose. Parsing and choosing are pure; only `host_mirror` reads files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from corral.errors import ImageBuildError

__all__ = [
    "AptSource",
    "Mirror",
    "choose_mirror",
    "host_mirror",
    "image_sources",
    "parse_classic",
    "parse_deb822",
    "render_deb822",
]

_COMPANION_SUFFIXES = ("-updates", "-security")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


@dataclass(frozen=True)
class Mirror:
    """The main archive (for debootstrap) plus its -updates/-security companions (for apt)."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None
    sources: tuple[AptSource, ...]


def parse_deb822(text: str) -> list[AptSource]:
    """Binary (`Types: deb`) entries of a deb822 .sources file; disabled ones are skipped."""
    out: list[AptSource] = []
    for stanza in _stanzas(text):
        if "deb" not in stanza.get("types", "").split():
            continue
        if stanza.get("enabled", "yes").lower() == "no":
            continue
        uris, suites = stanza.get("uris", "").split(), tuple(stanza.get("suites", "").split())
        if not uris or not suites:
            continue
        comps = tuple(stanza.get("components", "").split())
        signed = stanza.get("signed-by") or None
        if signed and "\n" in signed:  # an inline key block, not a path
            signed = None
        out.extend(AptSource(u, suites, comps, signed) for u in uris)
    return out


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, ""
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def parse_classic(text: str) -> list[AptSource]:
    """`deb [options] URI SUITE COMPONENT...` lines of a one-line-style sources.list."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        signed: str | None = None
        if rest.startswith("["):
            opts, _, rest = rest[1:].partition("]")
            for opt in opts.split():
                k, _, v = opt.partition("=")
                if k == "signed-by":
                    signed = v
        words = rest.split()
        if len(words) >= 2:
            out.append(AptSource(words[0], (words[1],), tuple(words[2:]), signed))
    return out


def choose_mirror(sources: list[AptSource]) -> Mirror:
    """Pick the main Debian archive (a bare suite such as `bookworm` with `main`) and keep the
    entries for its -updates and -security suites; third-party repositories are left out."""
    main: AptSource | None = None
    suite = ""
    for src in sources:
        if "main" not in src.components:
            continue
        bare = [s for s in src.suites if "-" not in s and "/" not in s]
        if bare:
            main, suite = src, bare[0]
            break
    if main is None:
        raise ImageBuildError(
            "cannot find the host's Debian mirror in its apt sources",
            hint="add a `deb URI SUITE main` entry to /etc/apt/sources.list or a deb822 "
            "`URIs:`/`Suites:` stanza under /etc/apt/sources.list.d/",
        )
    wanted = {suite, *(suite + s for s in _COMPANION_SUFFIXES)}
    kept: list[AptSource] = []
    for src in sources:
        suites = tuple(s for s in src.suites if s in wanted)
        if suites and "main" in src.components:
            kept.append(replace(src, suites=suites))
    return Mirror(main.uri, suite, main.components, main.signed_by, tuple(kept))


def image_sources(mirror: Mirror, suite: str, keyring: str | None) -> list[AptSource]:
    """The image's own apt sources: the host's entries moved to `suite` (which may differ from
    the host's), signed by the keyring that exists inside the image."""
    out = []
    for src in mirror.sources:
        suites = tuple(suite + s.removeprefix(mirror.suite) for s in src.suites)
        out.append(AptSource(src.uri, suites, src.components, keyring))
    return out


def render_deb822(sources: list[AptSource]) -> str:
    stanzas = []
    for src in sources:
        lines = [
            "Types: deb",
            f"URIs: {src.uri}",
            f"Suites: {' '.join(src.suites)}",
            f"Components: {' '.join(src.components)}",
        ]
        if src.signed_by:
            lines.append(f"Signed-By: {src.signed_by}")
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas)


def host_mirror(apt_dir: Path = Path("/etc/apt")) -> Mirror:
    """Read the host's apt sources (classic and deb822) and choose the mirror from them."""
    sources: list[AptSource] = []
    classic = apt_dir / "sources.list"
    if classic.is_file():
        sources += parse_classic(classic.read_text(errors="replace"))
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".sources":
                sources += parse_deb822(f.read_text(errors="replace"))
            elif f.suffix == ".list":
                sources += parse_classic(f.read_text(errors="replace"))
    return choose_mirror(sources)
