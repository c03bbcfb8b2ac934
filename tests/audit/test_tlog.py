"""The transparency-log formats against their specs: RFC 9162 trees and proofs checked by a
reference written here from the RFC's recursive definitions, the transparency-dev test vectors,
the C2SP signed-note example, tile paths and partial tiles as tlog-tiles spells them, and
malformed proofs refused."""

from __future__ import annotations

import base64
import hashlib

import pytest

from corral.audit.tlog.checkpoint import Checkpoint
from corral.audit.tlog.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from corral.audit.tlog.note import (
    NoteError,
    NoteSigner,
    NoteVerifier,
    key_id,
    open_note,
    sign_note,
)
from corral.audit.tlog.proof import InclusionProofText
from corral.audit.tlog.tiles import Tile, TileError, bundle, parse_tile_path, tiles_for, unbundle

# -- an independent reference, straight from RFC 9162 section 2.1 ---------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def _entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


# -- the transparency-dev vectors (merkle/testonly/constants.go) ------------------------------

LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_tree_heads_match_the_published_vectors() -> None:
    hashes = [leaf_hash(e) for e in LEAVES]
    for size, root in enumerate(ROOTS):
        assert tree_hash(hashes[:size]).hex() == root, size
        assert MemoryTree(hashes[:size]).root().hex() == root, size
        assert ref_mth(LEAVES[:size]).hex() == root, size
    assert EMPTY_ROOT.hex() == ROOTS[0]


def test_proofs_match_the_published_vectors() -> None:
    tree = MemoryTree(leaf_hash(e) for e in LEAVES)
    assert [h.hex()[:8] for h in inclusion_proof(tree, 0, 8)] == [
        "96a296d2",
        "5f083f0a",
        "6b47aaf2",
    ]
    assert [h.hex()[:8] for h in inclusion_proof(tree, 5, 8)] == [
        "bc1a0643",
        "ca854ea1",
        "d37ee418",
    ]
    assert [h.hex()[:8] for h in consistency_proof(tree, 3, 8)] == [
        "0298d122", "07506a85", "fac54203", "6b47aaf2",
    ]  # fmt: skip
    assert [h.hex()[:8] for h in consistency_proof(tree, 4, 8)] == ["6b47aaf2"]
    assert [h.hex()[:8] for h in consistency_proof(tree, 6, 8)] == [
        "0ebc5d34", "ca854ea1", "d37ee418",
    ]  # fmt: skip


def test_every_proof_equals_the_reference_and_verifies() -> None:
    d = _entries(40)
    tree = MemoryTree(leaf_hash(e) for e in d)
    for n in range(1, 41):
        root = tree.root(n)
        assert root == ref_mth(d[:n])
        for m in range(n):
            path = inclusion_proof(tree, m, n)
            assert path == ref_path(m, d[:n]), (m, n)
            verify_inclusion(leaf_hash(d[m]), m, n, path, root)
        for m in range(1, n):
            proof = consistency_proof(tree, m, n)
            assert proof == ref_subproof(m, d[:n], True), (m, n)
            verify_consistency(m, n, tree.root(m), root, proof)


def test_a_compact_range_knows_the_head_after_every_append() -> None:
    edge = CompactRange()
    d = _entries(300)
    for i, e in enumerate(d):
        edge.append(leaf_hash(e))
        assert edge.size == i + 1 and len(edge.hashes) == edge.size.bit_count()
        if i % 37 == 0 or i == 255:
            assert edge.root() == ref_mth(d[: i + 1])
    resumed = CompactRange(edge.size, edge.hashes)
    resumed.append(leaf_hash(b"more"))
    assert resumed.root() == ref_mth([*d, b"more"])


def test_tampered_inclusion_proofs_are_refused() -> None:
    d = _entries(21)
    tree = MemoryTree(leaf_hash(e) for e in d)
    root, path = tree.root(), inclusion_proof(tree, 13, 21)
    leaf = leaf_hash(d[13])
    bad = [path[0][:-1] + bytes([path[0][-1] ^ 1]), *path[1:]]
    cases = {
        "a changed hash": (leaf, 13, 21, bad),
        "another entry": (leaf_hash(b"forged"), 13, 21, path),
        "another index": (leaf, 12, 21, path),
        "one hash too many": (leaf, 13, 21, [*path, path[0]]),
        "one hash too few": (leaf, 13, 21, path[:-1]),
        "an index past the end": (leaf, 21, 21, path),
        "a short hash": (leaf, 13, 21, [path[0][:31], *path[1:]]),
    }
    for why, (lf, index, size, p) in cases.items():
        with pytest.raises(ProofError):
            verify_inclusion(lf, index, size, p, root)
            pytest.fail(why)


def test_malformed_consistency_proofs_are_refused() -> None:
    d = _entries(30)
    tree = MemoryTree(leaf_hash(e) for e in d)
    old, new = tree.root(11), tree.root(30)
    proof = consistency_proof(tree, 11, 30)
    verify_consistency(11, 30, old, new, proof)
    with pytest.raises(ProofError):  # over-long
        verify_consistency(11, 30, old, new, [*proof, proof[0]])
    with pytest.raises(ProofError):  # not fully consumed: the second size needs more
        verify_consistency(11, 30, old, new, proof[:-1])
    with pytest.raises(ProofError):  # first size larger than the second
        verify_consistency(30, 11, new, old, proof)
    with pytest.raises(ProofError):  # a changed old head
        verify_consistency(11, 30, tree.root(10), new, proof)
    with pytest.raises(ProofError):
        verify_consistency(11, 30, old, new, [])
    with pytest.raises(ProofError):
        verify_consistency(0, 30, EMPTY_ROOT, new, proof)
    verify_consistency(0, 30, EMPTY_ROOT, new, [])
    verify_consistency(30, 30, new, new, [])
    with pytest.raises(ProofError):
        verify_consistency(30, 30, new, old, [])


# -- signed notes ------------------------------------------------------------------------------

C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3"
    "mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_the_c2sp_example_note_verifies() -> None:
    verifier = NoteVerifier.from_vkey(C2SP_VKEY)
    assert verifier.vkey == C2SP_VKEY
    text, names = open_note(C2SP_NOTE, [verifier])
    assert text == "This is an example message.\n" and names == ["example.com/foo"]
    with pytest.raises(NoteError):
        open_note(C2SP_NOTE.replace("example message", "exemplary message"), [verifier])


def test_go_signer_keys_give_their_verifier_keys() -> None:
    skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    signer = NoteSigner.from_skey(skey)
    assert signer.skey == skey and signer.verifier.vkey == vkey
    public = base64.b64decode(vkey.split("+")[2])[1:]
    assert key_id("PeterNeumann", 0x01, public) == 0xC74F20A3


def test_note_rules() -> None:
    log, other = NoteSigner.generate("log.example/a"), NoteSigner.generate("witness.example")
    note = sign_note("hello\n", log, other)
    assert open_note(note, [log.verifier])[1] == ["log.example/a"]  # unknown keys ignored
    assert open_note(note, [log.verifier, other.verifier])[1] == [
        "log.example/a",
        "witness.example",
    ]
    with pytest.raises(NoteError, match="no trusted key"):
        open_note(note, [NoteSigner.generate("log.example/a").verifier])  # same name, other id
    forged = note.replace("hello", "howdy")
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, [log.verifier])
    for malformed in (
        "hello\n",  # no signatures
        "hello\n\n",  # an empty signature block
        "hel\x07lo\n\n" + log.signature_line(b"hel\x07lo\n"),  # a control character
        note.replace("\u2014 ", "- ", 1),  # not an em dash
        note[:-1],  # the last line without its newline
        note.replace("=\n", "\n", 1),  # broken base64
    ):
        with pytest.raises(NoteError):
            open_note(malformed, [log.verifier])
    with pytest.raises(NoteError):
        NoteSigner.generate("bad name")
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(C2SP_VKEY.replace("530d903a", "530d903b"))


def test_checkpoints_round_trip_and_refuse_bad_forms() -> None:
    root = hashlib.sha256(b"x").digest()
    cp = Checkpoint("corral.example/audit", 20852163, root, ("ext",))
    assert Checkpoint.parse(cp.text()) == cp
    assert cp.text().splitlines()[1] == "20852163"
    for bad in (
        "o\n012\n" + base64.b64encode(root).decode() + "\n",  # a leading zero
        "o\n-1\n" + base64.b64encode(root).decode() + "\n",
        "o\n12\n" + base64.b64encode(root[:31]).decode() + "\n",  # a short root
        "o\n12\n",
        "o\n" + "9" * 5000 + "\n" + base64.b64encode(root).decode() + "\n",  # too large
        "o\n12\n" + base64.b64encode(root).decode(),  # no final newline
    ):
        with pytest.raises(NoteError):
            Checkpoint.parse(bad)


# -- tiles ---------------------------------------------------------------------------------------


def test_tile_paths_as_tlog_tiles_spells_them() -> None:
    assert Tile(0, 0).path == "tile/0/000"
    assert Tile(0, 1000).path == "tile/0/x001/000"
    assert Tile(2, 1234067).path == "tile/2/x001/x234/067"
    assert Tile(0, 1234, 17).path == "tile/0/x001/234.p/17"
    assert Tile(-1, 5).path == "tile/entries/005"
    for tile in (Tile(0, 1234067), Tile(1, 7, 3), Tile(-1, 1000, 255), Tile(63, 0)):
        assert parse_tile_path(tile.path) == tile
    for bad in (
        "tile/00/000", "tile/64/000", "tile/0/1", "tile/0/001.p/0", "tile/0/001.p/256",
        "tile/0/001.p/07", "tile/0/x000/001", "tile/0/001/002", "tile/0/x001", "tiles/0/000",
        "tile/0/" + "x999/" * 10_000 + "000",  # refused without building a huge index
    ):  # fmt: skip
        with pytest.raises(TileError):
            parse_tile_path(bad)


def test_which_tiles_a_tree_has() -> None:
    tiles = list(tiles_for(70_000))
    level0 = [t for t in tiles if t.level == 0]
    assert len(level0) == 274 and level0[-1] == Tile(0, 273, 112)
    assert [t for t in tiles if t.level > 0] == [Tile(1, 0), Tile(1, 1, 17), Tile(2, 0, 1)]
    assert list(tiles_for(256)) == [Tile(0, 0), Tile(1, 0, 1)]
    assert list(tiles_for(0)) == []


def test_entry_bundles() -> None:
    entries = [b"", b"a", b"x" * 65_535]
    assert unbundle(bundle(entries)) == entries
    with pytest.raises(TileError):
        bundle([b"x" * 65_536])
    with pytest.raises(TileError):
        unbundle(b"\x00\x05abc")


def test_a_tlog_proof_round_trips_and_verifies_against_its_signed_checkpoint() -> None:
    log = NoteSigner.generate("corral.example/audit")
    d = _entries(1000)
    tree = MemoryTree(leaf_hash(e) for e in d)
    cp = Checkpoint(log.name, 1000, tree.root())
    signed = sign_note(cp.text(), log)
    doc = InclusionProofText(731, tuple(inclusion_proof(tree, 731, 1000)), signed, b"rec-731")
    parsed = InclusionProofText.parse(doc.text())
    assert parsed == doc
    text, _ = open_note(parsed.checkpoint, [log.verifier])
    head = Checkpoint.parse(text)
    verify_inclusion(leaf_hash(d[731]), parsed.index, head.size, list(parsed.path), head.root)
    with pytest.raises(ProofError):
        InclusionProofText.parse(doc.text().replace("index 731", "index 0731"))
    with pytest.raises(ProofError):
        InclusionProofText.parse(
            "c2sp.org/tlog-proof@v1\nindex 1\n" + "AAAA\n" * 64 + "\n" + signed
        )
