"""RFC 6962 / RFC 9162 Merkle tree hashing and proofs, over SHA-256 or (the national crypto
profile) SM3: the same tree shape and the same domain separation (0x00 before a leaf, 0x01
before two children) with another 32-byte hash. Every function and class takes the tree's hash
as `tree` (a `TreeHash`), SHA-256 unless told otherwise.

Long because the log's side and the auditor's side of RFC 9162 share one module, so tests can
hold one against the other: the proofs, their verifiers, and two incremental trees.

Leaves are the exact stored bytes of audit records, hashed once with `leaf_hash`; everything
else works on those 32-byte leaf hashes. The log side (`root`, `inclusion_proof`,
`consistency_proof`, `TreeState`) and the auditor side (`verify_inclusion`,
`verify_consistency`) share this module so tests can hold one against the other, but the
verifiers trust nothing except their arguments. Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.core.crypto import SHA256, SM3, CryptoProfile, HashSuite

HASH_SIZE = 32
# The tlog-witness cap on proof lines; only trees of more than 2**63 leaves need longer proofs.
MAX_PROOF_LENGTH = 63


class ProofError(ValueError):
    """A proof does not check out: malformed input, wrong length, or a root that does not match."""


@dataclass(frozen=True)
class TreeHash:
    """A Merkle tree's hash: RFC 9162's over one 32-byte hash function."""

    suite: HashSuite
    empty_root: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty_root", self.suite.digest(b""))

    def leaf(self, data: bytes) -> bytes:
        """H(0x00 || data): the prefix keeps a leaf from passing for an interior node."""
        return self.suite.digest(b"\x00" + data)

    def node(self, left: bytes, right: bytes) -> bytes:
        """H(0x01 || left || right)."""
        return self.suite.digest(b"\x01" + left + right)


SHA256_TREE = TreeHash(SHA256)
SM3_TREE = TreeHash(SM3)
EMPTY_ROOT = SHA256_TREE.empty_root


def tree_for(profile: CryptoProfile) -> TreeHash:
    """The tree hash of a crypto profile's logs."""
    return SM3_TREE if profile.hash is SM3 else SHA256_TREE


def leaf_hash(data: bytes, tree: TreeHash = SHA256_TREE) -> bytes:
    """H(0x00 || data), SHA-256 unless `tree` says otherwise."""
    return tree.leaf(data)


def node_hash(left: bytes, right: bytes, tree: TreeHash = SHA256_TREE) -> bytes:
    """H(0x01 || left || right)."""
    return tree.node(left, right)


def _split(size: int) -> int:
    """The size of the left subtree of a tree of `size` > 1 leaves: the largest power of two
    strictly less than `size`."""
    return 1 << ((size - 1).bit_length() - 1)


def _subtree(leaf_hashes: Sequence[bytes], start: int, end: int, tree: TreeHash) -> bytes:
    """MTH(D[start:end]) for end > start; recursion depth is log2 of the range."""
    if end - start == 1:
        return leaf_hashes[start]
    middle = start + _split(end - start)
    return tree.node(
        _subtree(leaf_hashes, start, middle, tree), _subtree(leaf_hashes, middle, end, tree)
    )


def _require_hashes(what: str, hashes: Iterable[bytes], error: type[ValueError]) -> None:
    for position, value in enumerate(hashes):
        if len(value) != HASH_SIZE:
            raise error(f"{what} {position} is {len(value)} bytes, expected {HASH_SIZE}")


def root(leaf_hashes: Sequence[bytes], tree: TreeHash = SHA256_TREE) -> bytes:
    """The Merkle tree hash of a tree with these leaf hashes (RFC 9162 §2.1.1)."""
    _require_hashes("leaf hash", leaf_hashes, ValueError)
    return _subtree(leaf_hashes, 0, len(leaf_hashes), tree) if leaf_hashes else tree.empty_root


def inclusion_proof(
    leaf_hashes: Sequence[bytes], index: int, tree: TreeHash = SHA256_TREE
) -> list[bytes]:
    """PATH(index, D[n]) (RFC 9162 §2.1.3.1): sibling subtree hashes from the leaf upwards.

    Each sibling subtree is hashed once and they are disjoint, so the cost is O(n)."""
    _require_hashes("leaf hash", leaf_hashes, ValueError)
    if not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index} is outside a tree of size {len(leaf_hashes)}")
    siblings: list[bytes] = []
    start, end = 0, len(leaf_hashes)
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            siblings.append(_subtree(leaf_hashes, middle, end, tree))
            end = middle
        else:
            siblings.append(_subtree(leaf_hashes, start, middle, tree))
            start = middle
    siblings.reverse()
    return siblings


def consistency_proof(
    leaf_hashes: Sequence[bytes], size1: int, tree: TreeHash = SHA256_TREE
) -> list[bytes]:
    """PROOF(size1, D[n]) (RFC 9162 §2.1.4.1): shows the first `size1` leaves are a prefix.

    Empty when `size1` is 0 or n; O(n) like `inclusion_proof`."""
    _require_hashes("leaf hash", leaf_hashes, ValueError)
    if not 0 <= size1 <= len(leaf_hashes):
        raise ValueError(f"old size {size1} is outside 0..{len(leaf_hashes)}")
    if size1 in (0, len(leaf_hashes)):
        return []
    siblings: list[bytes] = []
    start, end, old = 0, len(leaf_hashes), size1  # `old` leaves of D[start:end] are in the old tree
    whole_old_tree = True  # SUBPROOF's flag b: D[start:end] begins at leaf 0
    while old != end - start:
        middle = start + _split(end - start)
        if old <= middle - start:
            siblings.append(_subtree(leaf_hashes, middle, end, tree))
            end = middle
        else:
            siblings.append(_subtree(leaf_hashes, start, middle, tree))
            old -= middle - start
            start = middle
            whole_old_tree = False
    if not whole_old_tree:  # the verifier knows the old root, but not this subtree of it
        siblings.append(_subtree(leaf_hashes, start, end, tree))
    siblings.reverse()
    return siblings


def _check_inputs(hashes: dict[str, bytes], proof: Sequence[bytes], *sizes: int) -> None:
    for name, value in hashes.items():
        if len(value) != HASH_SIZE:
            raise ProofError(f"{name} is {len(value)} bytes, expected {HASH_SIZE}")
    if len(proof) > MAX_PROOF_LENGTH:
        raise ProofError(
            f"proof has {len(proof)} hashes, more than the limit of {MAX_PROOF_LENGTH}"
        )
    _require_hashes("proof hash", proof, ProofError)
    if any(size < 0 for size in sizes):
        raise ProofError(f"negative leaf index or tree size in {sizes}")


def _path_length(index: int, size: int) -> int:
    """Inclusion proof length: levels where the path has a left or right sibling inside the
    tree (`inner`), plus the levels along the right border where it has a left one only."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _mismatch(what: str, calculated: bytes, expected: bytes) -> ProofError:
    return ProofError(
        f"calculated {what} {calculated.hex()} does not match expected {expected.hex()}"
    )


def verify_inclusion(
    index: int,
    size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    root: bytes,
    tree: TreeHash = SHA256_TREE,
) -> None:
    """Check that leaf `index` (0-based) with `leaf_hash` is in the tree of `size` with `root`.

    RFC 9162 §2.1.3.2, after rejecting malformed input and proofs of the wrong length."""
    _check_inputs({"leaf hash": leaf_hash, "root": root}, proof, index, size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not inside a tree of size {size}")
    if len(proof) != _path_length(index, size):
        raise ProofError(
            f"inclusion proof for leaf {index} in a tree of size {size} has {len(proof)} "
            f"hashes, expected {_path_length(index, size)}"
        )
    fn, sn, calculated = index, size - 1, leaf_hash
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            calculated = tree.node(sibling, calculated)
            while not fn & 1 and fn != 0:  # climb past levels where we are a lone right edge
                fn, sn = fn >> 1, sn >> 1
        else:
            calculated = tree.node(calculated, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if calculated != root:
        raise _mismatch("root", calculated, root)


def _consistency_length(size1: int, size2: int) -> int:
    """Consistency proof length for 0 < size1 < size2: the path of the old tree's last full
    subtree (of 2**level leaves) inside the new tree, plus that subtree's own hash unless it is
    the whole old tree, whose root the verifier already has."""
    level = (size1 & -size1).bit_length() - 1
    node = (size1 - 1) >> level
    return _path_length(node, ((size2 - 1) >> level) + 1) + (node != 0)


def verify_consistency(
    size1: int,
    size2: int,
    proof: Sequence[bytes],
    root1: bytes,
    root2: bytes,
    tree: TreeHash = SHA256_TREE,
) -> None:
    """Check that the tree of `size1` with `root1` is a prefix of the tree of `size2` with
    `root2` (RFC 9162 §2.1.4.2, with the empty and equal-size cases of transparency-dev).

    As in the reference, any `root1` is consistent with size 0: whoever holds checkpoints must
    check that a size-0 root is the empty tree's (`tree.empty_root`)."""
    _check_inputs({"old root": root1, "new root": root2}, proof, size1, size2)
    if size1 > size2:
        raise ProofError(f"old size {size1} is larger than new size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError(f"consistency proof between equal sizes has {len(proof)} hashes")
        if root1 != root2:
            raise ProofError(
                f"old root {root1.hex()} and new root {root2.hex()} differ at size {size1}"
            )
        return
    if size1 == 0:
        if proof:
            raise ProofError(f"consistency proof from size 0 has {len(proof)} hashes")
        return
    if len(proof) != _consistency_length(size1, size2):
        raise ProofError(
            f"consistency proof from size {size1} to {size2} has {len(proof)} hashes, "
            f"expected {_consistency_length(size1, size2)}"
        )
    hashes = list(proof)
    if size1 & (size1 - 1) == 0:  # the old tree is a full subtree: its root starts the path
        hashes.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old = new = hashes[0]
    for sibling in hashes[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path to the new root")
        if fn & 1 or fn == sn:
            old, new = tree.node(sibling, old), tree.node(sibling, new)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            new = tree.node(new, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path to the new root")
    if old != root1:
        raise _mismatch("old root", old, root1)
    if new != root2:
        raise _mismatch("new root", new, root2)


class SubtreeHashes:
    """The hashes of every aligned full subtree of a growing list of leaf hashes (level k holds
    the blocks of 2**k leaves), so that the Merkle hash of any range the RFC 9162 recursion
    visits, and so every proof, costs O(log n) node hashes instead of O(n). Appending a leaf
    costs at most log n node hashes; memory is about two hashes per leaf."""

    def __init__(self, leaf_hashes: Iterable[bytes] = (), tree: TreeHash = SHA256_TREE) -> None:
        self.tree = tree
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaf_hashes:
            self.append(leaf)

    def append(self, leaf: bytes) -> None:
        self._levels[0].append(leaf)
        level = 0
        while len(below := self._levels[level]) % 2 == 0:
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(self.tree.node(below[-2], below[-1]))
            level += 1

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for 0 <= start < end <= size."""
        width = end - start
        if width & (width - 1) == 0 and start % width == 0:
            level = width.bit_length() - 1
            return self._levels[level][start >> level]
        middle = start + _split(width)
        return self.tree.node(self.subtree(start, middle), self.subtree(middle, end))

    def root(self, size: int) -> bytes:
        """MTH(D[0:size])."""
        if not 0 <= size <= self.size:
            raise ValueError(f"size {size} is not within 0..{self.size}")
        return self.subtree(0, size) if size else self.tree.empty_root

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), equal to
        `inclusion_proof(leaf_hashes[:size], index)`."""
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf index {index} is outside a tree of size {size}")
        siblings: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            middle = start + _split(end - start)
            if index < middle:
                siblings.append(self.subtree(middle, end))
                end = middle
            else:
                siblings.append(self.subtree(start, middle))
                start = middle
        siblings.reverse()
        return siblings

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """PROOF(size1, D[0:size2]) (RFC 9162 §2.1.4.1), equal to
        `merkle.consistency_proof(leaf_hashes[:size2], size1)`."""
        if not 0 <= size1 <= size2 <= self.size:
            raise ValueError(f"sizes {size1} and {size2} are not within 0..{self.size} in order")
        if size1 in (0, size2):
            return []
        siblings: list[bytes] = []
        start, end, old = 0, size2, size1
        whole_old_tree = True
        while old != end - start:
            middle = start + _split(end - start)
            if old <= middle - start:
                siblings.append(self.subtree(middle, end))
                end = middle
            else:
                siblings.append(self.subtree(start, middle))
                old -= middle - start
                start = middle
                whole_old_tree = False
        if not whole_old_tree:
            siblings.append(self.subtree(start, end))
        siblings.reverse()
        return siblings


class TreeState:
    """The right edge of a growing tree, so a sequencer can append without keeping leaves.

    It holds the roots of the full subtrees that make up [0, size), largest (leftmost) first:
    one per set bit of `size`, at most 64 hashes. `append` merges equal-sized subtrees like a
    binary counter carries (O(log n) worst case, O(1) amortised); `root` folds them right to
    left, which equals MTH because each split point k is the largest power of two below n.
    A state can be rebuilt by replaying leaf hashes or restored from a stored (size, hashes).
    """

    __slots__ = ("_hashes", "_size", "tree")

    def __init__(
        self, size: int = 0, hashes: Sequence[bytes] = (), tree: TreeHash = SHA256_TREE
    ) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {max(size, 0).bit_count()} full subtrees, "
                f"got {len(hashes)} hashes"
            )
        _require_hashes("subtree hash", hashes, ValueError)
        self._size = size
        self._hashes = list(hashes)
        self.tree = tree

    @classmethod
    def from_leaf_hashes(
        cls, leaf_hashes: Iterable[bytes], tree: TreeHash = SHA256_TREE
    ) -> TreeState:
        """Replay stored leaf hashes in order (e.g. after a restart)."""
        state = cls(tree=tree)
        for leaf in leaf_hashes:
            state.append(leaf)
        return state

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The full-subtree roots, largest first: with `size`, everything needed to resume."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
        merged, carry = leaf_hash, self._size
        while carry & 1:  # a subtree of the same size ends here: merge, like a binary carry
            merged = self.tree.node(self._hashes.pop(), merged)
            carry >>= 1
        self._hashes.append(merged)
        self._size += 1

    def root(self) -> bytes:
        if not self._hashes:
            return self.tree.empty_root
        result = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            result = self.tree.node(left, result)
        return result

    def __repr__(self) -> str:
        return f"TreeState(size={self._size}, root={self.root().hex()})"
