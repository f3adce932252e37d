"""The torch (GPU) TM-score search kernels, run on the CPU: padded per-pair products, device-side dedup, few syncs."""

import numpy as np
import pytest

from multimed_hf.metrics import _tm_search
from multimed_hf.metrics import structure as S
from multimed_hf.metrics._tm_rotation import rotations

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def chains():
    tmtools_io = pytest.importorskip("tmtools.io")
    from tmtools.testing import get_pdb_path

    model = tmtools_io.get_structure(get_pdb_path("2gtl"))[0]
    return {chain_id: tmtools_io.get_residue_data(model[chain_id])[0] for chain_id in "ABCDEH"}


def _turn(rng):
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z],
    ])


def _batch(chains, sizes=(("A", 147), ("B", 60), ("C", 149), ("D", 25), ("H", 90), ("E", 12)), seed=5):
    """A prepared batch of noisy moved copies of real chains of varied lengths (as structure_scores builds it)."""
    rng = np.random.default_rng(seed)
    preds, refs = [], []
    for (name, size), sigma in zip(sizes, (0.5, 1.5, 2.5, 1.0, 3.0, 0.7)):
        ca = chains[name][:size]
        refs.append(ca)
        preds.append(ca @ _turn(rng).T + rng.normal(scale=sigma, size=ca.shape))
    prepared = []
    for x, y in zip(preds, refs):
        prepared.append((x - x.mean(axis=0), y - y.mean(axis=0)))
    rot, _ = S._global_fits([(x, y, len(y)) for x, y in prepared])
    pairs = [(x @ r.T, y) for (x, y), r in zip(prepared, rot)]
    lengths = [len(y) for _, y in pairs]
    return lambda: _tm_search.prepare_batch(pairs, [S.tm_d0(n) ** 2 for n in lengths],
                                            [S.tm_d0_search(n) for n in lengths])


@pytest.mark.parametrize("chunk", [1, 1 << 14, 1 << 30], ids=["a-pair-a-chunk", "a-few-pairs", "one-chunk"])
def test_torch_search_equals_numpy_search_for_any_chunk_of_pairs(chains, chunk):
    """The padded per-pair products give the numpy kernels' scores however the pairs are split into chunks."""
    make = _batch(chains)
    want_best, want_gdt = _tm_search.NumpySearch(np.float64)(make())
    best, gdt = _tm_search.TorchSearch("cpu", torch.float64, chunk=chunk)(make())
    assert best == pytest.approx(want_best, abs=1e-9)
    assert np.array_equal(gdt, want_gdt)


def _rows_with_duplicates(rng, n_pairs=5, rows=40, width=130):
    """Rows sorted by pair with many repeated selections (some empty) and a previous selection for each."""
    block = np.repeat(np.arange(n_pairs), rows)
    choices = rng.random((6, width)) < 0.5
    choices[0] = False  # the empty selection: dropped
    below = choices[rng.integers(0, 6, size=len(block))]
    packed = np.packbits(np.pad(below, ((0, 0), (0, -width % 64))), axis=1)
    current = packed.copy()
    moved = rng.random(len(block)) < 0.7  # most rows changed their selection; the rest converged
    current[moved] = packed[rng.permutation(len(block))][moved]
    n_sel = below.sum(axis=1)
    return block, packed, n_sel, current


@pytest.mark.parametrize("hashed", [True, False], ids=["hash", "every-hash-equal"])
def test_next_rows_keeps_the_first_row_of_each_live_distinct_selection(monkeypatch, hashed):
    """The device-side grouping (hash, stable sort, exact compare of neighbours) against numpy's exact unique.
    With every hash equal, equal selections that are not neighbours are kept twice (a superset, never fewer), and
    a selection that converged in one row can live on in another: its fits repeat scores already taken."""
    rng = np.random.default_rng(11)
    block, packed, n_sel, current = _rows_with_duplicates(rng)
    if not hashed:
        monkeypatch.setattr(_tm_search, "_HASH", (0, 0, 0))
    want = _tm_search.NumpySearch().next_rows(block, packed, n_sel, current)
    search = _tm_search.TorchSearch("cpu", torch.float64)
    as_words = lambda a: torch.as_tensor(np.ascontiguousarray(a)).view(torch.int64)  # noqa: E731
    got = search.next_rows(torch.as_tensor(block), as_words(packed), torch.as_tensor(n_sel), as_words(current))
    got = got.numpy()
    assert (np.diff(got) > 0).all()
    if hashed:
        assert got.tolist() == want.tolist()
    else:
        assert set(want) <= set(got) and len(got) > len(want)
        key = lambda i: (block[i], packed[i].tobytes())  # noqa: E731
        extra = {key(i) for i in got} - {key(i) for i in want}
        converged = {key(i) for i in range(len(block)) if (packed[i] == current[i]).all()}
        assert extra <= converged  # a row whose selection converged elsewhere: its future repeats taken scores
        assert (n_sel[got] > 0).all()


def test_equal_hashes_change_no_score(chains, monkeypatch):
    """Every hash made equal: duplicate rows are kept and refitted, and every score stays the same."""
    make = _batch(chains)
    want = _tm_search.TorchSearch("cpu", torch.float64)(make())
    monkeypatch.setattr(_tm_search, "_HASH", (0, 0, 0))
    got = _tm_search.TorchSearch("cpu", torch.float64)(make())
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def _sync_ops(fn):
    """Calls of ops that read a device value back to the host, while fn runs."""
    from torch.profiler import ProfilerActivity, profile

    names = ("aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_dim", "aten::equal",
             "aten::is_nonzero")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.name in names]


def test_next_rows_reads_back_once():
    """A round's dedup reads one value back (the rows kept): no unique, equal or item on the device."""
    rng = np.random.default_rng(2)
    block, packed, n_sel, current = _rows_with_duplicates(rng)
    search = _tm_search.TorchSearch("cpu", torch.float64)
    args = [torch.as_tensor(block), torch.as_tensor(packed).view(torch.int64), torch.as_tensor(n_sel),
            torch.as_tensor(current).view(torch.int64)]
    assert _sync_ops(lambda: search.next_rows(*args)) == ["aten::nonzero"]


def test_rotation_solve_reads_back_twice_with_weak_and_degenerate_sets():
    """The rotation solve on tensors reads two index lists back (near half turns; degenerate sets), not a mask
    per use, and gives numpy's rotations."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 5, 3)) * 10.0
    x[:10] = rng.normal(size=(10, 5, 1)) * [[[30.0, 0.0, 0.0]]]  # collinear: solved by SVD
    turns = np.array([_turn(rng) for _ in range(60)])
    turns[-10:] = np.diag([1.0, -1.0, -1.0])  # half turns: the quaternion's w vanishes
    y = np.einsum("mij,mkj->mki", turns, x) + rng.normal(size=x.shape) * 0.1
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    h = np.einsum("mia,mib->mab", xc, yc)
    want, _ = rotations([[h[:, a, b] for b in range(3)] for a in range(3)], with_value=False)
    ht = torch.as_tensor(h)
    got = []
    syncs = _sync_ops(lambda: got.append(rotations([[ht[:, a, b] for b in range(3)] for a in range(3)],
                                                   with_value=False)[0]))
    assert syncs.count("aten::nonzero") == 2  # weak and degenerate rows, as index lists
    assert len(syncs) <= 3  # and at most torch's own error check of the SVD of the degenerate ones
    for i in range(3):
        for j in range(3):
            assert got[0][i][j].numpy() == pytest.approx(want[i][j], abs=1e-12)


def test_torch_kernels_search_pairs_of_any_lengths_in_one_batch():
    """Each chunk of pairs has its own width on the torch kernels, so one batch takes short and long pairs
    (one set of rounds for all); the numpy kernels keep pairs of similar length together."""
    lengths = [12, 147, 525, 60, 462, 149]
    search = _tm_search.TorchSearch("cuda", torch.float32)  # built without a GPU: nothing runs on it here
    assert S._plan(lengths, search.batch_size, search.max_rows, search.width_slack) == [[0, 3, 1, 5, 4, 2]]
    assert len(S._plan(lengths, 64, _tm_search.NumpySearch.max_rows)) > 1
