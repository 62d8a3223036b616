"""RFC 6962 Merkle maths: the public transparency-dev vectors, corrupted proofs, and properties
that hold at every tree size."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit import merkle
from gateway.audit.merkle import (
    EMPTY_ROOT,
    MAX_PROOF_LENGTH,
    ProofError,
    TreeState,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# transparency-dev/merkle proof/verify_test.go, as hex in the reference (leaf numbers 0-based here).
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
HASHES = [leaf_hash(leaf) for leaf in LEAVES]
ROOTS = {
    n: bytes.fromhex(h)
    for n, h in enumerate(
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ],
        start=1,
    )
}
P = {
    "96a296d2": "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a": "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf2": "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    "bc1a0643": "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca854ea1": "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "0ebc5d34": "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "b08693ec": "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "6e340b9c": ROOTS[1].hex(),
    "fac54203": ROOTS[2].hex(),
    "d37ee418": ROOTS[4].hex(),
}


def hashes(*short: str) -> list[bytes]:
    return [bytes.fromhex(P[s]) for s in short]


INCLUSION = [
    (0, 8, hashes("96a296d2", "5f083f0a", "6b47aaf2")),
    (5, 8, hashes("bc1a0643", "ca854ea1", "d37ee418")),
    (2, 3, hashes("fac54203")),
    (1, 5, hashes("6e340b9c", "5f083f0a", "bc1a0643")),
    (0, 1, []),
]
CONSISTENCY = [
    (1, 8, hashes("96a296d2", "5f083f0a", "6b47aaf2")),
    (6, 8, hashes("0ebc5d34", "ca854ea1", "d37ee418")),
    (2, 5, hashes("5f083f0a", "bc1a0643")),
    (6, 7, hashes("0ebc5d34", "b08693ec", "d37ee418")),
    (1, 1, []),
]

InclusionArgs = tuple[int, int, bytes, list[bytes], bytes]  # index, size, leaf hash, proof, root
ConsistencyArgs = tuple[int, int, list[bytes], bytes, bytes]  # size1, size2, proof, root1, root2

# Distinct leaves for the properties: leaf i is the 8-byte big-endian encoding of i.
MANY = [leaf_hash(i.to_bytes(8, "big")) for i in range(1100)]
LARGER_SIZES = [100, 127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025]


def naive_root(leaves: Sequence[bytes]) -> bytes:
    """MTH exactly as RFC 6962 §2.1 writes it, slices and all."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def flip(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def test_the_empty_tree_root_is_sha256_of_nothing() -> None:
    assert (
        root([])
        == EMPTY_ROOT
        == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )
    assert TreeState().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_the_public_leaves_match_the_published_roots(size: int) -> None:
    assert root(HASHES[:size]) == ROOTS[size]


def test_the_named_proof_elements_are_the_subtrees_the_reference_says() -> None:
    assert [leaf_hash(LEAVES[1]), leaf_hash(LEAVES[4]), leaf_hash(LEAVES[6])] == hashes(
        "96a296d2", "bc1a0643", "b08693ec"
    )
    assert [root(HASHES[2:4]), root(HASHES[4:8]), root(HASHES[6:8]), root(HASHES[4:6])] == hashes(
        "5f083f0a", "6b47aaf2", "ca854ea1", "0ebc5d34"
    )


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_public_vectors_and_verify(
    index: int, size: int, proof: list[bytes]
) -> None:
    assert inclusion_proof(HASHES[:size], index) == proof
    verify_inclusion(index, size, HASHES[index], proof, ROOTS[size])


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_public_vectors_and_verify(
    size1: int, size2: int, proof: list[bytes]
) -> None:
    assert consistency_proof(HASHES[:size2], size1) == proof
    verify_consistency(size1, size2, proof, ROOTS[size1], ROOTS[size2])


def edits(proof: list[bytes], bit: int) -> Iterator[tuple[str, list[bytes]]]:
    """transparency-dev's proof corruptions: garbage around, removed, inserted, truncated, flipped."""
    garbage = b"\xaa" * 32
    yield "empty proof", []
    yield "leading garbage", [garbage, *proof]
    yield "trailing garbage", [*proof, garbage]
    for i in range(len(proof)):
        yield f"element {i} removed", proof[:i] + proof[i + 1 :]
        yield f"element {i} bit {bit} flipped", [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
        yield f"element {i} truncated", [*proof[:i], proof[i][:31], *proof[i + 1 :]]
        yield f"garbage inserted before element {i}", [*proof[:i], garbage, *proof[i:]]


def inclusion_corruptions(
    index: int, size: int, proof: list[bytes]
) -> Iterator[tuple[str, InclusionArgs]]:
    good: InclusionArgs = (index, size, HASHES[index], proof, ROOTS[size])
    probes: dict[str, InclusionArgs] = {
        "index - 1": (index - 1, size, HASHES[index], proof, ROOTS[size]),
        "index + 1": (index + 1, size, HASHES[index], proof, ROOTS[size]),
        "index ^ 2": (index ^ 2, size, HASHES[index], proof, ROOTS[size]),
        "size * 2": (index, size * 2, HASHES[index], proof, ROOTS[size]),
        "size // 2": (index, size // 2, HASHES[index], proof, ROOTS[size]),
        "wrong leaf": (index, size, leaf_hash(b"WrongLeaf"), proof, ROOTS[size]),
        "empty-tree root": (index, size, HASHES[index], proof, EMPTY_ROOT),
        "random root": (index, size, HASHES[index], proof, b"\x5a" * 32),
        "root appended": (index, size, HASHES[index], [*proof, ROOTS[size]], ROOTS[size]),
        **{
            what: (index, size, HASHES[index], edited, ROOTS[size])
            for what, edited in edits(proof, bit=3)
        },
    }
    for what, args in probes.items():
        if args != good:
            yield what, args


def consistency_corruptions(
    size1: int, size2: int, proof: list[bytes]
) -> Iterator[tuple[str, ConsistencyArgs]]:
    good: ConsistencyArgs = (size1, size2, proof, ROOTS[size1], ROOTS[size2])
    probes: dict[str, ConsistencyArgs] = {
        "size1 - 1": (size1 - 1, size2, proof, ROOTS[size1], ROOTS[size2]),
        "size1 + 1": (size1 + 1, size2, proof, ROOTS[size1], ROOTS[size2]),
        "size1 ^ 2": (size1 ^ 2, size2, proof, ROOTS[size1], ROOTS[size2]),
        "size2 * 2": (size1, size2 * 2, proof, ROOTS[size1], ROOTS[size2]),
        "size2 // 2": (size1, size2 // 2, proof, ROOTS[size1], ROOTS[size2]),
        "wrong root1": (size1, size2, proof, b"\x5a" * 32, ROOTS[size2]),
        "wrong root2": (size1, size2, proof, ROOTS[size1], b"\x5a" * 32),
        "roots swapped": (size1, size2, proof, ROOTS[size2], ROOTS[size1]),
        "root2 as root1": (size1, size2, proof, ROOTS[size2], ROOTS[size2]),
        "root1 prepended": (size1, size2, [ROOTS[size1], *proof], ROOTS[size1], ROOTS[size2]),
        **{
            what: (size1, size2, edited, ROOTS[size1], ROOTS[size2])
            for what, edited in edits(proof, bit=4)
        },
    }
    for what, args in probes.items():
        # Size 0 is consistent with every tree whatever root1 says (RFC 9162, as referenced).
        if args != good and args[0] != 0:
            yield what, args


def all_rejected(verify: Callable[..., None], cases: Iterator[tuple[str, Any]]) -> list[str]:
    """The names of the corruptions that `verify` failed to reject."""
    accepted = []
    for what, args in cases:
        try:
            verify(*args)
        except ProofError:
            continue
        accepted.append(what)
    return accepted


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_every_corruption_of_a_public_inclusion_proof_is_rejected(
    index: int, size: int, proof: list[bytes]
) -> None:
    assert all_rejected(verify_inclusion, inclusion_corruptions(index, size, proof)) == []


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY)
def test_every_corruption_of_a_public_consistency_proof_is_rejected(
    size1: int, size2: int, proof: list[bytes]
) -> None:
    assert all_rejected(verify_consistency, consistency_corruptions(size1, size2, proof)) == []


def test_a_root_mismatch_names_the_calculated_and_expected_roots() -> None:
    proof = inclusion_proof(HASHES, 5)
    with pytest.raises(ProofError, match=f"calculated root {ROOTS[8].hex()} does not match expected {ROOTS[7].hex()}"):  # fmt: skip
        verify_inclusion(5, 8, HASHES[5], proof, ROOTS[7])


def test_a_proof_of_the_wrong_length_is_rejected_before_any_hashing() -> None:
    with pytest.raises(ProofError, match="has 2 hashes, expected 3"):
        verify_inclusion(0, 8, HASHES[0], inclusion_proof(HASHES, 0)[:2], ROOTS[8])
    with pytest.raises(ProofError, match="has 2 hashes, expected 3"):
        verify_consistency(6, 8, consistency_proof(HASHES, 6)[:2], ROOTS[6], ROOTS[8])


def test_hashes_that_are_not_32_bytes_are_rejected() -> None:
    with pytest.raises(ProofError, match="leaf hash is 31 bytes"):
        verify_inclusion(0, 1, HASHES[0][:31], [], ROOTS[1])
    with pytest.raises(ProofError, match="old root is 33 bytes"):
        verify_consistency(1, 1, [], ROOTS[1] + b"\x00", ROOTS[1])
    with pytest.raises(ValueError, match="leaf hash 1 is 0 bytes"):
        root([HASHES[0], b""])
    with pytest.raises(ValueError, match="leaf hash is 4 bytes"):
        TreeState().append(b"leaf")


def test_proofs_longer_than_63_hashes_are_rejected_whatever_the_sizes() -> None:
    long_proof = [HASHES[0]] * (MAX_PROOF_LENGTH + 1)
    with pytest.raises(ProofError, match="more than the limit of 63"):
        verify_inclusion(0, 2**64 - 1, HASHES[0], long_proof, ROOTS[1])
    with pytest.raises(ProofError, match="more than the limit of 63"):
        verify_consistency(1, 2**64 - 1, long_proof, ROOTS[1], ROOTS[1])


def test_negative_indexes_and_sizes_are_rejected() -> None:
    with pytest.raises(ProofError, match="negative"):
        verify_inclusion(-1, 8, HASHES[0], [], ROOTS[8])
    with pytest.raises(ProofError, match="negative"):
        verify_consistency(-1, 8, [], ROOTS[1], ROOTS[8])


def test_equal_sizes_are_consistent_only_with_the_same_root_and_no_proof() -> None:
    verify_consistency(8, 8, [], ROOTS[8], ROOTS[8])
    with pytest.raises(ProofError, match="differ at size 8"):
        verify_consistency(8, 8, [], ROOTS[8], ROOTS[7])
    with pytest.raises(ProofError, match="equal sizes has 1 hashes"):
        verify_consistency(8, 8, [ROOTS[8]], ROOTS[8], ROOTS[8])


def test_the_empty_tree_is_consistent_with_any_tree_given_an_empty_proof() -> None:
    verify_consistency(0, 8, [], EMPTY_ROOT, ROOTS[8])
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ProofError, match="from size 0 has 1 hashes"):
        verify_consistency(0, 8, [ROOTS[8]], EMPTY_ROOT, ROOTS[8])


def test_a_shrinking_tree_is_never_consistent() -> None:
    with pytest.raises(ProofError, match="old size 8 is larger than new size 7"):
        verify_consistency(8, 7, [], ROOTS[8], ROOTS[7])


def test_the_log_side_refuses_indexes_outside_the_tree() -> None:
    with pytest.raises(ValueError, match="outside a tree of size 8"):
        inclusion_proof(HASHES, 8)
    with pytest.raises(ValueError, match=r"outside 0\.\.8"):
        consistency_proof(HASHES, 9)


def test_every_leaf_of_every_tree_up_to_64_leaves_has_a_verifying_inclusion_proof() -> None:
    for size in range(1, 65):
        tree_root = naive_root(MANY[:size])
        assert root(MANY[:size]) == tree_root
        for index in range(size):
            proof = inclusion_proof(MANY[:size], index)
            verify_inclusion(index, size, MANY[index], proof, tree_root)


def test_every_pair_of_sizes_up_to_64_has_a_verifying_consistency_proof() -> None:
    roots = [root(MANY[:size]) for size in range(65)]
    for size2 in range(65):
        for size1 in range(size2 + 1):
            proof = consistency_proof(MANY[:size2], size1)
            verify_consistency(size1, size2, proof, roots[size1], roots[size2])


@settings(max_examples=40, deadline=None)
@given(size=st.sampled_from(LARGER_SIZES), data=st.data())
def test_larger_trees_match_the_naive_root_and_their_proofs_verify(
    size: int, data: st.DataObject
) -> None:
    tree_root = root(MANY[:size])
    assert tree_root == naive_root(MANY[:size])
    index = data.draw(st.integers(0, size - 1))
    verify_inclusion(index, size, MANY[index], inclusion_proof(MANY[:size], index), tree_root)
    size1 = data.draw(st.integers(0, size))
    proof = consistency_proof(MANY[:size], size1)
    verify_consistency(size1, size, proof, root(MANY[:size1]), tree_root)


@st.composite
def inclusion_cases(draw: st.DrawFn) -> InclusionArgs:
    size = draw(st.integers(1, 64) | st.sampled_from(LARGER_SIZES))
    index = draw(st.integers(0, size - 1))
    return index, size, MANY[index], inclusion_proof(MANY[:size], index), root(MANY[:size])


@settings(max_examples=300, deadline=None)
@given(case=inclusion_cases(), data=st.data())
def test_any_single_bit_flip_in_an_inclusion_check_makes_it_fail(
    case: InclusionArgs, data: st.DataObject
) -> None:
    index, size, leaf, proof, tree_root = case
    target = data.draw(st.integers(-2, len(proof) - 1))  # -2 leaf, -1 root, else a proof element
    bit = data.draw(st.integers(0, 255))
    if target == -2:
        leaf = flip(leaf, bit)
    elif target == -1:
        tree_root = flip(tree_root, bit)
    else:
        proof = [*proof[:target], flip(proof[target], bit), *proof[target + 1 :]]
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf, proof, tree_root)


def test_a_wrong_leaf_index_or_a_doubled_or_halved_size_fails_in_every_tree_up_to_64() -> None:
    for size in range(1, 65):
        tree_root = root(MANY[:size])
        for index in range(size):
            proof = inclusion_proof(MANY[:size], index)
            for wrong_index, wrong_size in [
                (index - 1, size),
                (index + 1, size),
                (index ^ 2, size),
                (index, size * 2),
                (index, size // 2),
            ]:
                with pytest.raises(ProofError):
                    verify_inclusion(wrong_index, wrong_size, MANY[index], proof, tree_root)


def test_a_size_with_the_same_path_shape_is_not_detected_so_sizes_must_come_signed() -> None:
    # Leaf 0's path is "sibling on the right" twice in trees of 3 and of 4 leaves, so the proof
    # checks out for either size: the verifier learns the size only from a signed checkpoint.
    verify_inclusion(0, 3, MANY[0], inclusion_proof(MANY[:4], 0), root(MANY[:4]))


def test_a_wrong_old_size_or_a_doubled_or_halved_new_size_fails_for_every_pair_up_to_64() -> None:
    roots = [root(MANY[:size]) for size in range(65)]
    for size2 in range(1, 65):
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(MANY[:size2], size1)
            for wrong1, wrong2 in [
                (size1 - 1, size2),
                (size1 + 1, size2),
                (size1 ^ 2, size2),
                (size1, size2 * 2),
                (size1, size2 // 2),
            ]:
                if wrong1 == 0:  # size 0 is consistent with anything
                    continue
                with pytest.raises(ProofError):
                    verify_consistency(wrong1, wrong2, proof, roots[size1], roots[size2])


@st.composite
def consistency_cases(draw: st.DrawFn) -> ConsistencyArgs:
    size2 = draw(st.integers(1, 64) | st.sampled_from(LARGER_SIZES))
    size1 = draw(st.integers(1, size2))
    proof = consistency_proof(MANY[:size2], size1)
    return size1, size2, proof, root(MANY[:size1]), root(MANY[:size2])


@settings(max_examples=300, deadline=None)
@given(case=consistency_cases(), data=st.data())
def test_any_single_bit_flip_in_a_consistency_check_makes_it_fail(
    case: ConsistencyArgs, data: st.DataObject
) -> None:
    size1, size2, proof, root1, root2 = case
    target = data.draw(st.integers(-2, len(proof) - 1))  # -2 old root, -1 new root, else proof
    bit = data.draw(st.integers(0, 255))
    if target == -2:
        root1 = flip(root1, bit)
    elif target == -1:
        root2 = flip(root2, bit)
    else:
        proof = [*proof[:target], flip(proof[target], bit), *proof[target + 1 :]]
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, proof, root1, root2)


def test_tree_state_appended_leaf_by_leaf_agrees_with_root_at_every_size() -> None:
    state = TreeState()
    for size in range(1, len(MANY) + 1):
        state.append(MANY[size - 1])
        assert state.size == size
        assert len(state.hashes) == size.bit_count()
        if size <= 300 or size.bit_count() <= 2:
            assert state.root() == root(MANY[:size]), size


@settings(max_examples=50, deadline=None)
@given(size=st.integers(0, len(MANY)))
def test_tree_state_rebuilt_or_restored_continues_like_the_original(size: int) -> None:
    rebuilt = TreeState.from_leaf_hashes(MANY[:size])
    restored = TreeState(rebuilt.size, rebuilt.hashes)
    assert rebuilt.root() == restored.root() == root(MANY[:size])
    restored.append(MANY[size % len(MANY)])
    assert restored.root() == root([*MANY[:size], MANY[size % len(MANY)]])


def test_tree_state_refuses_a_stored_state_with_the_wrong_number_of_subtrees() -> None:
    with pytest.raises(ValueError, match="a tree of size 7 has 3 full subtrees, got 2 hashes"):
        TreeState(7, MANY[:2])


def test_the_subtree_cache_grown_leaf_by_leaf_gives_the_reference_roots_and_proofs() -> None:
    leaves = [merkle.leaf_hash(index.to_bytes(2, "big")) for index in range(70)]
    subtrees = merkle.SubtreeHashes()
    for size2 in range(71):
        assert subtrees.size == size2
        assert subtrees.root(size2) == merkle.root(leaves[:size2])
        for size1 in range(size2 + 1):
            assert subtrees.consistency_proof(size1, size2) == merkle.consistency_proof(
                leaves[:size2], size1
            ), (size1, size2)
        for index in range(size2):
            assert subtrees.inclusion_proof(index, size2) == merkle.inclusion_proof(
                leaves[:size2], index
            ), (index, size2)
        if size2 < 70:
            subtrees.append(leaves[size2])
    with pytest.raises(ValueError, match="outside a tree of size 70"):
        subtrees.inclusion_proof(70, 70)
