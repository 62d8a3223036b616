"""The Merkle maths over SM3 (the national crypto profile): the same tree shape and domain
separation as RFC 9162 with SM3 in place of SHA-256, held against a naive tree built with
another SM3 implementation (GmSSL's), and every proof of every tree up to 64 leaves."""

from __future__ import annotations

from collections.abc import Sequence

import gmssl_pyx
import pytest

from gateway.audit.merkle import (
    SHA256_TREE,
    SM3_TREE,
    ProofError,
    SubtreeHashes,
    TreeState,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [i.to_bytes(8, "big") for i in range(70)]
SM3_HASHES = [leaf_hash(leaf, SM3_TREE) for leaf in LEAVES]


def gmssl_root(leaves: Sequence[bytes]) -> bytes:
    """MTH as RFC 9162 §2.1.1 writes it, over GmSSL's SM3."""
    if not leaves:
        return bytes(gmssl_pyx.sm3_hash(b""))
    if len(leaves) == 1:
        return bytes(gmssl_pyx.sm3_hash(b"\x00" + leaves[0]))
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return bytes(gmssl_pyx.sm3_hash(b"\x01" + gmssl_root(leaves[:k]) + gmssl_root(leaves[k:])))


def test_the_sm3_tree_is_rfc_9162s_shape_over_an_independent_sm3() -> None:
    assert SM3_TREE.empty_root == gmssl_pyx.sm3_hash(b"") == root([], SM3_TREE)
    for size in range(1, 70):
        assert root(SM3_HASHES[:size], SM3_TREE) == gmssl_root(LEAVES[:size]), size
    assert root(SM3_HASHES[:9], SM3_TREE) != root(
        [leaf_hash(leaf) for leaf in LEAVES[:9]], SHA256_TREE
    )


def test_every_sm3_inclusion_and_consistency_proof_up_to_64_leaves_verifies() -> None:
    for size in range(1, 65):
        tree_root = root(SM3_HASHES[:size], SM3_TREE)
        for index in range(size):
            proof = inclusion_proof(SM3_HASHES[:size], index, SM3_TREE)
            verify_inclusion(index, size, SM3_HASHES[index], proof, tree_root, SM3_TREE)
        for size1 in range(size + 1):
            proof = consistency_proof(SM3_HASHES[:size], size1, SM3_TREE)
            old_root = root(SM3_HASHES[:size1], SM3_TREE)
            verify_consistency(size1, size, proof, old_root, tree_root, SM3_TREE)


def test_an_sm3_proof_never_passes_as_a_sha256_one() -> None:
    size, index = 13, 5
    proof = inclusion_proof(SM3_HASHES[:size], index, SM3_TREE)
    tree_root = root(SM3_HASHES[:size], SM3_TREE)
    with pytest.raises(ProofError, match="does not match"):
        verify_inclusion(index, size, SM3_HASHES[index], proof, tree_root)  # SHA-256
    old = root(SM3_HASHES[:6], SM3_TREE)
    with pytest.raises(ProofError, match="does not match"):
        verify_consistency(6, size, consistency_proof(SM3_HASHES[:size], 6, SM3_TREE), old, tree_root)  # fmt: skip


def test_the_incremental_sm3_trees_agree_with_the_reference_at_every_size() -> None:
    state, cache = TreeState(tree=SM3_TREE), SubtreeHashes(tree=SM3_TREE)
    for size, leaf in enumerate(SM3_HASHES, start=1):
        state.append(leaf)
        cache.append(leaf)
        expected = root(SM3_HASHES[:size], SM3_TREE)
        assert state.root() == cache.root(size) == expected, size
        assert cache.inclusion_proof(size // 2, size) == inclusion_proof(SM3_HASHES[:size], size // 2, SM3_TREE)  # fmt: skip
        assert cache.consistency_proof(size // 3, size) == consistency_proof(SM3_HASHES[:size], size // 3, SM3_TREE)  # fmt: skip
    restored = TreeState(state.size, state.hashes, tree=SM3_TREE)
    rebuilt = TreeState.from_leaf_hashes(SM3_HASHES, tree=SM3_TREE)
    assert restored.root() == rebuilt.root() == state.root()
