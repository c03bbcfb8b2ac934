"""`corral audit key|checkpoint|prove|verify`: proofs checked by an independent verifier written
here from RFC 9162 section 2.1.3.2 and the C2SP tlog-proof, tlog-checkpoint and signed-note texts
(none of corral's Merkle, note or proof code), malformed proofs refused one by one, and the
data-folder verify catching a checkpoint whose root or signature is wrong."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import update
from typer.testing import CliRunner

from corral.audit import log
from corral.audit.tlog.cosignature import CosignatureSigner
from corral.cli.audit import app
from corral.store import EntryKeys, Store
from corral.store._tables import audit_checkpoints, audit_entries, audit_state, audit_tiles

N = 37  # an odd size: a right edge of several subtrees


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CORRAL_DATABASE_URL", f"sqlite:///{tmp_path}/corral.db")
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CORRAL_AUDIT_ORIGIN", "corral.test/h1/audit")
    store = Store(f"sqlite:///{tmp_path}/corral.db")
    store.migrate()
    with store.transaction() as uow:
        log.append(
            uow,
            [f"entry {i}".encode() for i in range(N)],
            [EntryKeys(f"uid-{i}") for i in range(N)],
        )
    store.close()
    return tmp_path


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args))
    return done.exit_code, done.output


def _vkey(env: Path) -> str:
    return (env / "data" / "audit" / "log.vkey").read_text().strip()


# -- an independent verifier ---------------------------------------------------------------


def _b64(s: str) -> bytes:
    raw = base64.b64decode(s, validate=True)
    assert base64.b64encode(raw).decode() == s
    return raw


def independent_verify(proof: str, vkey: str, entry: bytes) -> tuple[int, int]:
    """(index, size), or AssertionError: the proof checked from the spec texts alone."""
    # C2SP tlog-proof: header, optional extra, index, hashes, blank line, checkpoint verbatim
    head, checkpoint = proof.split("\n\n", 1)
    lines = head.split("\n")
    assert lines.pop(0) == "c2sp.org/tlog-proof@v1"
    if lines[0].startswith("extra "):
        lines.pop(0)
    assert lines[0].startswith("index ")
    index = int(lines.pop(0)[6:])
    path = [_b64(h) for h in lines]
    assert all(len(h) == 32 for h in path)
    # signed-note: text, blank line (the last one), signature lines; vkey name+id+b64(1||key)
    name, key_id_hex, key_b64 = vkey.split("+", 2)
    key = _b64(key_b64)
    assert key[0] == 1
    assert hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == key_id_hex
    split = checkpoint.rindex("\n\n")
    text, sigs = checkpoint[: split + 1], checkpoint[split + 2 :]
    verified = False
    for line in sigs.splitlines():
        assert line.startswith("\u2014 ")
        sig_name, sig_b64 = line[2:].split(" ")
        raw = _b64(sig_b64)
        if sig_name == name and raw[:4].hex() == key_id_hex:
            Ed25519PublicKey.from_public_bytes(key[1:]).verify(raw[4:], text.encode())
            verified = True
    assert verified
    # tlog-checkpoint: origin, size, root
    origin, size_text, root_b64 = text.splitlines()[:3]
    assert origin == name
    size, root = int(size_text), _b64(root_b64)
    # RFC 9162 section 2.1.3.2
    assert index < size
    fn, sn = index, size - 1
    r = hashlib.sha256(b"\x00" + entry).digest()
    for p in path:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0 and r == root
    return index, size


# -- key, checkpoint, prove ---------------------------------------------------------------


def test_key_prints_the_verifier_key(env: Path) -> None:
    code, out = run("key")
    assert code == 0 and out.strip().startswith("corral.test/h1/audit+")
    code, out = run("key", "--output", "json")
    doc = json.loads(out)
    assert doc["origin"] == "corral.test/h1/audit" and doc["vkey"] == _vkey(env)
    assert doc["vkey"].split("+")[1] == doc["key_id"]


def test_every_proof_verifies_independently(env: Path) -> None:
    code, note = run("checkpoint")
    assert code == 0 and f"\n{N}\n" in note
    vkey = _vkey(env)
    for index in range(N):
        code, proof = run("prove", str(index))
        assert code == 0, proof
        assert independent_verify(proof, vkey, f"entry {index}".encode()) == (index, N)
        # and the proof carries the entry, base64, in its extra line
        assert (
            proof.split("\n")[1] == "extra " + base64.b64encode(f"entry {index}".encode()).decode()
        )
    # a wrong entry does not verify independently either (the test can fail)
    code, proof = run("prove", "5")
    with pytest.raises(AssertionError):
        independent_verify(proof, vkey, b"entry 6")


def test_prove_by_record_id_and_limits(env: Path) -> None:
    code, out = run("prove", "3")
    assert code != 0 and "no signed checkpoint" in out
    run("checkpoint")
    code, by_id = run("prove", "uid-12")
    assert code == 0 and by_id == run("prove", "12")[1]
    code, out = run("prove", "--no-entry", "12")
    assert code == 0 and "extra " not in out
    code, out = run("prove", str(N))
    assert code != 0 and "not under the latest signed checkpoint" in out
    code, out = run("prove", "no-such-uid")
    assert code != 0 and "no audit entry" in out


# -- verify --proof ------------------------------------------------------------------------


@pytest.fixture
def proof_file(env: Path) -> Path:
    run("checkpoint")
    code, proof = run("prove", "9")
    assert code == 0
    path = env / "e9.tlog-proof"
    path.write_text(proof)
    return path


def test_verify_proof_valid_with_entry_and_key_text(env: Path, proof_file: Path) -> None:
    vkey_file = str(env / "data" / "audit" / "log.vkey")
    code, out = run("verify", "--proof", str(proof_file), "--key", vkey_file)
    assert code == 0 and out.startswith("valid: entry 9")
    entry = env / "entry"
    entry.write_bytes(b"entry 9")
    code, out = run(
        "verify", "--proof", str(proof_file), "--key", _vkey(env), "--entry", str(entry)
    )
    assert code == 0, out
    entry.write_bytes(b"entry 8")
    code, out = run(
        "verify", "--proof", str(proof_file), "--key", _vkey(env), "--entry", str(entry)
    )
    assert code == 1 and "does not lead to the checkpoint's root" in out
    code, out = run("verify", "--proof", str(proof_file), "--key", _vkey(env), "--output", "json")
    assert code == 0 and json.loads(out)["index"] == 9


def _variants(proof: str) -> dict[str, tuple[str, str]]:
    head, checkpoint = proof.split("\n\n", 1)
    lines = head.split("\n")  # header, extra, index, hashes...
    hashes = lines[3:]
    body, _sigs = checkpoint.rsplit("\n\n", 1)
    size = int(body.split("\n")[1])
    return {
        "too long": (proof + "x" * (256 * 1024), "over"),
        "an extra line among the hashes": (
            "\n".join([*lines[:3], "not a hash", *hashes]) + "\n\n" + checkpoint,
            "base64",
        ),
        "an extra line after the signatures": (proof + "\u2014 trailing\n", "signature line"),
        "a line after the checkpoint": (proof + "junk\n", "em dash"),
        "a second extra line": (
            "\n".join([lines[0], lines[1], lines[1], *lines[2:]]) + "\n\n" + checkpoint,
            "index",
        ),
        "one hash too few": ("\n".join(lines[:-1]) + "\n\n" + checkpoint, "shorter"),
        "one hash too many": (
            "\n".join([*lines, hashes[0]]) + "\n\n" + checkpoint,
            "longer",
        ),
        "over 63 hashes": ("\n".join([*lines[:3], *[hashes[0]] * 64]) + "\n\n" + checkpoint, "63"),
        "index at the size": (
            "\n".join([lines[0], lines[1], f"index {size}", *hashes]) + "\n\n" + checkpoint,
            "not below the checkpoint's size",
        ),
        "index with a leading zero": (
            "\n".join([lines[0], lines[1], "index 09", *hashes]) + "\n\n" + checkpoint,
            "leading zeros",
        ),
        "bad base64 hash": (
            "\n".join([*lines[:3], hashes[0][:-2] + "!=", *hashes[1:]]) + "\n\n" + checkpoint,
            "base64",
        ),
        "non-canonical base64 hash": (
            "\n".join([*lines[:3], hashes[0][:-2] + chr(ord(hashes[0][-2]) ^ 1) + "=", *hashes[1:]])
            + "\n\n"
            + checkpoint,
            "",
        ),
        "a changed hash": (
            "\n".join([*lines[:3], base64.b64encode(b"\x00" * 32).decode(), *hashes[1:]])
            + "\n\n"
            + checkpoint,
            "does not lead to the checkpoint's root",
        ),
        "a changed checkpoint size": (
            proof.replace(f"\n{size}\n", f"\n{size + 1}\n"),
            "does not verify",
        ),
        "a wrong header": (
            proof.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
            "starts with",
        ),
        "no checkpoint": (head + "\n", "blank line"),
        "unsigned checkpoint": (head + "\n\n" + body + "\n", "blank line"),
        "bad base64 extra": (
            "\n".join([lines[0], "extra ***", *lines[2:]]) + "\n\n" + checkpoint,
            "base64",
        ),
        "signatures only by someone else": (
            head + "\n\n" + body + "\n\n\u2014 other.example/log AAAAAAAA\n",
            "no trusted key",
        ),
    }


def test_verify_proof_rejects_each_malformed_variant(env: Path, proof_file: Path) -> None:
    proof = proof_file.read_text()
    assert proof.count("\n") > 5 and "extra " in proof
    for name, (variant, why) in _variants(proof).items():
        assert variant != proof, name
        bad = env / "bad.tlog-proof"
        bad.write_text(variant)
        code, out = run("verify", "--proof", str(bad), "--key", _vkey(env))
        assert code == 1, (name, out)
        assert out.startswith("invalid: "), (name, out)
        assert why in out, (name, why, out)


def test_verify_proof_needs_the_right_key_and_witnesses(env: Path, proof_file: Path) -> None:
    from corral.audit.tlog.note import NoteSigner

    stranger = NoteSigner.generate("corral.test/h1/audit").verifier.vkey
    code, out = run("verify", "--proof", str(proof_file), "--key", stranger)
    assert code == 1 and "no trusted key signed" in out
    code, out = run("verify", "--proof", str(proof_file))
    assert code == 2 and "--key" in out
    w = CosignatureSigner.generate("w.example/1")
    code, out = run(
        "verify", "--proof", str(proof_file), "--key", _vkey(env), "--witness", w.verifier.vkey
    )
    assert code == 1 and "no cosignature by w.example/1" in out


def test_witnesses_cosign_and_are_required(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w1, w2 = CosignatureSigner.generate("w.example/1"), CosignatureSigner.generate("w.example/2")
    keys = env / "witness.keys"
    keys.write_text(f"{w1.skey}\n{w2.skey}\n")
    keys.chmod(0o600)
    monkeypatch.setenv("CORRAL_AUDIT_WITNESS_KEYS", str(keys))
    code, note = run("checkpoint")
    assert code == 0 and note.count("\u2014 ") == 3
    code, proof = run("prove", "0")
    path = env / "p"
    path.write_text(proof)
    args = ["verify", "--proof", str(path), "--key", _vkey(env)]
    code, out = run(*args, "--witness", w1.verifier.vkey, "--witness", w2.verifier.vkey)
    assert code == 0 and "cosigned by w.example/1" in out and "cosigned by w.example/2" in out
    # a cosignature line whose timestamp was changed
    line = next(x for x in proof.splitlines() if x.startswith("\u2014 w.example/2 "))
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1
    path.write_text(
        proof.replace(line, f"\u2014 w.example/2 {base64.b64encode(bytes(raw)).decode()}")
    )
    code, out = run(*args, "--witness", w2.verifier.vkey)
    assert code == 1 and "w.example/2" in out and "does not verify" in out
    # the data-folder verify requires them too
    code, out = run("verify", "--witness", w1.verifier.vkey)
    assert code == 0, out
    code, out = run("verify", "--witness", CosignatureSigner.generate("w.example/3").verifier.vkey)
    assert code == 1 and "no cosignature by w.example/3" in out


# -- verify (data folder) with checkpoints ------------------------------------------------


def test_verify_checks_the_stored_checkpoints(env: Path) -> None:
    run("checkpoint")
    store = Store(f"sqlite:///{env}/corral.db")
    with store.transaction() as uow:
        log.append(uow, [f"entry {i}".encode() for i in range(N, N + 20)])
    store.close()
    run("checkpoint")
    code, out = run("verify")
    # the two stored (the latest's copy outside the database, audit/latest.checkpoint, is
    # the same note: checked once)
    assert code == 0 and "2 signed checkpoints hold" in out

    # a checkpoint whose root does not match the records (the row and note re-signed with
    # another key would fail the signature instead: here the note is kept, the records change
    # consistently, as a rewrite that recomputes every hash would leave them)
    store = Store(f"sqlite:///{env}/corral.db")
    with store.transaction() as uow:
        rows = uow.connection.execute(audit_entries.select().order_by(audit_entries.c.idx)).all()
        uow.connection.execute(audit_entries.delete())
        uow.connection.execute(update(audit_state).values(size=0, edge=b""))
        uow.connection.execute(audit_tiles.delete())
    with store.transaction() as uow:
        entries = [bytes(r.entry) for r in rows]
        entries[45] = b"rewritten"
        log.append(uow, entries)
    store.close()
    code, out = run("verify")
    assert code == 1, out
    assert f"first bad index: {N}" in out  # the first checkpoint (size N) still holds
    assert f"checkpoint {N + 20}: its root differs" in out
    doc = json.loads(run("verify", "--output", "json")[1])
    assert doc["first_bad_index"] == N and doc["bad_checkpoints"] == [N + 20]


def test_verify_catches_a_bad_checkpoint_signature_and_a_cut_log(env: Path) -> None:
    run("checkpoint")
    store = Store(f"sqlite:///{env}/corral.db")
    with store.transaction() as uow:
        note = uow.connection.execute(audit_checkpoints.select()).one().note
        sig_line = note.rsplit("\n", 2)[1]
        name, b64 = sig_line[2:].split(" ")
        raw = bytearray(base64.b64decode(b64))
        raw[-1] ^= 1
        forged = note.replace(sig_line, f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}")
        uow.connection.execute(update(audit_checkpoints).values(note=forged))
    store.close()
    code, out = run("verify")
    assert code == 1 and "does not verify" in out and f"bad checkpoints (sizes): {N}" in out
    doc = json.loads(run("verify", "--output", "json")[1])
    assert doc["ok"] is False and doc["bad_checkpoints"] == [N]

    # a log cut short together with its head: the checkpoint names what is missing
    store = Store(f"sqlite:///{env}/corral.db")
    with store.transaction() as uow:
        uow.connection.execute(update(audit_checkpoints).values(note=note))
        rows = uow.connection.execute(audit_entries.select().order_by(audit_entries.c.idx)).all()
        uow.connection.execute(audit_entries.delete())
        uow.connection.execute(audit_tiles.delete())
        uow.connection.execute(update(audit_state).values(size=0, edge=b""))
    with store.transaction() as uow:
        log.append(uow, [bytes(r.entry) for r in rows[:30]])
    store.close()
    code, out = run("verify")
    assert code == 1 and "first bad index: 30" in out
    assert f"checkpoint {N} was signed but the records stop at 30" in out
