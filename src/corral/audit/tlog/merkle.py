"""RFC 9162 section 2.1 Merkle trees over SHA-256: tree heads, inclusion and consistency proofs,
and their verification, written from the RFC's text (no Python library fits: see
docs/audit.md, "Why by hand").

Leaves are indexed from 0. A leaf hash is SHA-256(0x00 || entry), an inner node
SHA-256(0x01 || left || right), the empty tree's head SHA-256(""). Proofs are lists of 32-byte
hashes from the leaf's (or the old tree's) side up to the root's child, as RFC 9162 and C2SP
tlog-proof order them.

Proof generation asks a `SubtreeHashes` for the hash of any range of leaves; `MemoryTree`
answers from the leaf hashes it holds, a log answers from its stored tiles.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "MemoryTree",
    "ProofError",
    "SubtreeHashes",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion",
    "tree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof that does not prove what it claims, or that is malformed."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, with the stack of RFC 9162 section 2.1.2 (O(log n) memory)."""
    stack = CompactRange()
    for h in leaf_hashes:
        stack.append(h)
    return stack.root()


class CompactRange:
    """The right edge of a growing tree: one hash per set bit of its size. What an
    append-only writer keeps to know the head after each append without rereading leaves."""

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        #: the perfect subtrees' hashes, largest (leftmost) first
        self._hashes = list(hashes)
        if len(self._hashes) != size.bit_count():
            raise ValueError("a compact range holds one hash per set bit of its size")

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> None:
        h = leaf
        index = self.size
        while index & 1:  # merge the perfect subtrees this leaf completes
            h = node_hash(self._hashes.pop(), h)
            index >>= 1
        self._hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h


class SubtreeHashes(Protocol):
    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for 0 <= start < end <= the tree's size."""


class MemoryTree:
    """Leaf hashes held in memory; perfect subtrees are cached as they are asked for."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.leaves: list[bytes] = list(leaf_hashes)
        self._perfect: dict[tuple[int, int], bytes] = {}

    def append(self, leaf: bytes) -> None:
        self.leaves.append(leaf)

    def subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n <= 0 or end > len(self.leaves):
            raise ValueError(f"no subtree [{start}, {end}) in a tree of {len(self.leaves)}")
        if n == 1:
            return self.leaves[start]
        perfect = n & (n - 1) == 0
        if perfect and (start, end) in self._perfect:
            return self._perfect[(start, end)]
        k = _split(n)
        h = node_hash(self.subtree(start, start + k), self.subtree(start + k, end))
        if perfect:
            self._perfect[(start, end)] = h
        return h

    def root(self, size: int | None = None) -> bytes:
        size = len(self.leaves) if size is None else size
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)


def inclusion_proof(tree: SubtreeHashes, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 section 2.1.3.1."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:  # walk down, collecting the siblings root-side first
        k = _split(end - start)
        if index < start + k:
            path.append(tree.subtree(start + k, end))
            end = start + k
        else:
            path.append(tree.subtree(start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(tree: SubtreeHashes, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 9162 section 2.1.4.1 (empty when first is 0 or equal
    to second, as C2SP tlog-witness answers those)."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from {first} to {second}")
    if first == 0 or first == second:
        return []
    return _subproof(tree, first, 0, second, True)


def _subproof(tree: SubtreeHashes, m: int, start: int, end: int, whole: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if whole else [tree.subtree(start, end)]
    k = _split(n)
    if m <= k:
        return [*_subproof(tree, m, start, start + k, whole), tree.subtree(start + k, end)]
    return [*_subproof(tree, m - k, start + k, end, False), tree.subtree(start, start + k)]


def _check_hashes(path: Sequence[bytes]) -> None:
    for h in path:
        if len(h) != HASH_SIZE:
            raise ProofError(f"a proof hash is {len(h)} bytes, not {HASH_SIZE}")


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root that `path` proves `leaf` at `index` under, RFC 9162 section 2.1.3.2; raises
    ProofError for a path of the wrong length for (index, size)."""
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    _check_hashes(path)
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `path` proves `leaf` at `index` in the tree of `size` with
    head `root`."""
    if root_from_inclusion(leaf, index, size, path) != root:
        raise ProofError(f"the inclusion proof for leaf {index} does not lead to the root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree of `first` leaves with head `first_root`
    is a prefix of the tree of `second` leaves with head `second_root` (RFC 9162 section
    2.1.4.2, with the empty and equal sizes answered as C2SP tlog-witness does)."""
    _check_hashes(proof)
    if first < 0 or first > second:
        raise ProofError(f"a tree of {first} cannot be a prefix of a tree of {second}")
    if first == second:
        if proof:
            raise ProofError("a proof between equal sizes must be empty")
        if first_root != second_root:
            raise ProofError("two heads of the same size differ")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        if first_root != EMPTY_ROOT:
            raise ProofError("the empty tree's head is SHA-256 of nothing")
        return
    if not proof:
        raise ProofError("an empty consistency proof between different sizes")
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the old head is a node of the new tree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than needed")
    if fr != first_root:
        raise ProofError(f"the consistency proof does not lead to the head of size {first}")
    if sr != second_root:
        raise ProofError(f"the consistency proof does not lead to the head of size {second}")
