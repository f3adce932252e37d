"""TM-score / RMSD / GDT-TS against tmtools (TM-align) on its real structures, hand-derived cases and bad input."""

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

from multimed_hf.metrics import _tm_search
from multimed_hf.metrics import structure as S
from multimed_hf.metrics._tm_rotation import kabsch_svd, rotations
from multimed_hf.metrics.structure import fragment_lengths, structure_scores, tm_d0, tm_d0_search, tm_score

ROOT = Path(__file__).resolve().parents[1]
METRIC_DIR = ROOT / "metrics" / "tm_score"


@pytest.fixture
def rng():
    return np.random.default_rng(20040702)


@pytest.fixture(scope="module")
def chains():
    """C-alpha coordinates and sequences of the real chains that tmtools ships (2gtl: 4 chains in 3 copies)."""
    tmtools_io = pytest.importorskip("tmtools.io")
    from tmtools.testing import get_pdb_path

    out = {}
    for name, ids in (("2gtl", "ABCDEFGH"), ("7ok9", "A")):
        model = tmtools_io.get_structure(get_pdb_path(name))[0]
        for chain_id in ids:
            out[f"{name}{chain_id}"] = tmtools_io.get_residue_data(model[chain_id])
    return out


def _rotation(axis, degrees):
    u = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _tmtools(prediction, reference, seq_pred, seq_ref, aligned=None):
    """tmtools' TM-align on a fixed residue correspondence (its -I mode): the reference program's search."""
    import tmtools

    alignment = aligned or (seq_pred, seq_ref)
    result = tmtools.tm_align(
        np.ascontiguousarray(prediction, dtype=float), np.ascontiguousarray(reference, dtype=float),
        seq_pred, seq_ref, alignment=alignment,
    )
    return result.tm_norm_chain2, result.rmsd


def _global_fit_tm(prediction, reference):
    """The TM-score of one least-squares (Kabsch) superposition over all residues: what the search must beat."""
    x, y = prediction - prediction.mean(0), reference - reference.mean(0)
    u, _, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    dist = np.linalg.norm(x @ rot.T - y, axis=1)
    return float(np.mean(1.0 / (1.0 + (dist / tm_d0(len(reference))) ** 2)))


# ---------------------------------------------------------------------------------------------------------------
# constants of the reference program, by hand


def test_d0_and_its_floor_by_hand():
    assert tm_d0(147) == pytest.approx(1.24 * 132 ** (1 / 3) - 1.8) and round(tm_d0(147), 2) == 4.51
    assert tm_d0(22) == pytest.approx(1.24 * 7 ** (1 / 3) - 1.8)  # 0.572: the formula, just above the floor
    assert tm_d0(21) == tm_d0(10) == tm_d0(1) == 0.5  # small L: the 0.5 A floor
    assert tm_d0_search(147) == pytest.approx(tm_d0(147))
    assert tm_d0_search(50) == 4.5 and tm_d0_search(5000) == 8.0  # d0 2.26 and 19.4 clamped to [4.5, 8]


def test_seed_fragments_by_hand():
    assert fragment_lengths(147) == [147, 73, 36, 18, 9, 4]
    assert sum(147 - n + 1 for n in fragment_lengths(147)) == 601  # every start position: 601 seeds
    assert fragment_lengths(20) == [20, 10, 5, 4]
    assert fragment_lengths(8) == [8, 4] and fragment_lengths(3) == [3]


def test_batched_rotation_solve_matches_svd_kabsch(rng):
    """The vectorised solve (closed form + Horn quaternion) against numpy's SVD with the reflection fix."""
    x = rng.normal(size=(300, 6, 3)) * rng.uniform(0.5, 20.0, size=(300, 1, 1))
    x[:50, :, 2] = 0.0  # planar sets
    turns = [_rotation(rng.normal(size=3), deg) for deg in rng.uniform(0, 180, 300)]
    turns[-20:] = [_rotation(rng.normal(size=3), 180.0)] * 20  # half turns: the quaternion's w vanishes
    y = np.einsum("mij,mkj->mki", np.array(turns), x) + rng.normal(size=x.shape) * rng.uniform(0, 2, (300, 1, 1))
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    h = np.einsum("mia,mib->mab", xc, yc)
    rot, best = rotations([[h[:, a, b] for b in range(3)] for a in range(3)])
    rot = np.stack([np.stack(row, axis=-1) for row in rot], axis=1)
    u, _, vt = np.linalg.svd(h)
    v, ut = np.swapaxes(vt, 1, 2), np.swapaxes(u, 1, 2)
    flip = np.stack([np.ones(300), np.ones(300), np.sign(np.linalg.det(v @ ut))], axis=1)
    want = (v * flip[:, None, :]) @ ut
    assert np.abs(rot - want).max() < 1e-9
    assert np.abs(np.linalg.det(rot) - 1).max() < 1e-12
    assert best == pytest.approx(np.einsum("mab,mba->m", want, h), rel=1e-12)


def test_unpolished_and_polished_solves_against_svd_on_degenerate_sets(rng):
    """The search's float32 path solves in float64 without the Newton polish, the float64 path with it: against
    SVD on random, planar, nearly collinear (s2 and s3 both tiny: the closed form's double root, sent to SVD) and
    half-turn problems."""
    x = rng.normal(size=(400, 5, 3)) * rng.uniform(0.5, 20.0, size=(400, 1, 1))
    x[:50, :, 2] = 0.0  # planar
    x[50:100] = rng.normal(size=(50, 5, 1)) * [[[30.0, 0.0, 0.0]]] + rng.normal(size=(50, 5, 3)) * 0.3
    turns = [_rotation(rng.normal(size=3), deg) for deg in rng.uniform(0, 180, 400)]
    turns[-20:] = [_rotation(rng.normal(size=3), 180.0)] * 20
    y = np.einsum("mij,mkj->mki", np.array(turns), x) + rng.normal(size=x.shape) * 0.3
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    h = np.einsum("mia,mib->mab", xc, yc)
    u, _, vt = np.linalg.svd(h)
    v, ut = np.swapaxes(vt, 1, 2), np.swapaxes(u, 1, 2)
    flip = np.stack([np.ones(400), np.ones(400), np.sign(np.linalg.det(v @ ut))], axis=1)
    want = (v * flip[:, None, :]) @ ut
    for polish, tol in ((False, 1e-6), (True, 1e-9)):
        rot, _ = rotations([[h[:, a, b] for b in range(3)] for a in range(3)], with_value=False, polish=polish)
        rot = np.stack([np.stack(row, axis=-1) for row in rot], axis=1)
        assert np.abs(rot - want).max() < tol, polish
        assert np.abs(np.linalg.det(rot) - 1).max() < 1e-12


# ---------------------------------------------------------------------------------------------------------------
# rigid copies


def test_identical_structures_score_one(chains):
    ca = chains["2gtlA"][0]
    scores = structure_scores([ca], [ca])
    assert scores["tm_score"][0] == pytest.approx(1.0, abs=1e-12)
    assert scores["rmsd"][0] == pytest.approx(0.0, abs=1e-6)
    assert scores["gdt_ts"][0] == 1.0


def test_bfloat16_tensors_are_read(chains):
    # before: .numpy() on a bfloat16 tensor raised, reported as "predictions[0] is not a numeric coordinate array"
    torch = pytest.importorskip("torch")
    ca = torch.as_tensor(chains["2gtlA"][0]).to(torch.bfloat16)
    scores = structure_scores(ca[None], ca[None])
    assert scores["tm_score"][0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("degrees", [37.0, 180.0])  # 180: the quaternion's first component vanishes
def test_rotated_translated_copy_scores_one_on_all_three(chains, degrees):
    ca = chains["2gtlB"][0]
    moved = ca @ _rotation([0.3, -1.0, 0.6], degrees).T + np.array([40.0, -12.0, 7.5])
    scores = structure_scores([moved], [ca])
    assert scores["tm_score"][0] == pytest.approx(1.0, abs=1e-9)
    assert scores["rmsd"][0] == pytest.approx(0.0, abs=1e-5)
    assert scores["gdt_ts"][0] == 1.0
    assert tm_score(moved, ca) == pytest.approx(1.0, abs=1e-9)


def test_backbone_input_uses_the_calpha(chains):
    ca = chains["2gtlC"][0]
    backbone = np.stack([ca + [1.2, 0, 0], ca, ca + [0, 1.5, 0], ca + [0, 0, 1.2]], axis=1)  # N, CA, C, O
    assert tm_score(backbone, ca) == pytest.approx(1.0, abs=1e-12)
    assert tm_score(backbone[:, :3], backbone) == pytest.approx(1.0, abs=1e-12)  # N, CA, C


# ---------------------------------------------------------------------------------------------------------------
# against tmtools on real structures


def _real_pairs(chains, rng):
    """Real copies of one chain in the 2gtl crystal, and noisy near-native copies of 2gtl A and 7ok9 A."""
    pairs = [(chains[p], chains[r]) for p, r in (("2gtlE", "2gtlA"), ("2gtlF", "2gtlB"), ("2gtlG", "2gtlC"))]
    for name, sigma in (("2gtlA", 0.4), ("2gtlD", 0.8), ("7ok9A", 0.6)):
        ca, seq = chains[name]
        pairs.append(((ca + rng.normal(scale=sigma, size=ca.shape), seq), (ca, seq)))
    return pairs


def test_tm_score_and_rmsd_match_tmtools_on_real_structures(chains, rng):
    pairs = _real_pairs(chains, rng)
    for (_, seq_pred), (_, seq_ref) in pairs:
        assert seq_pred == seq_ref  # the same chain: residue i matches residue i
    scores = structure_scores([p for (p, _), _ in pairs], [r for _, (r, _) in pairs])
    for i, ((pred, seq_pred), (ref, seq_ref)) in enumerate(pairs):
        want_tm, want_rmsd = _tmtools(pred, ref, seq_pred, seq_ref)
        assert want_tm >= 0.8, "a near-native pair, where TMscore and TM-align agree"
        assert scores["tm_score"][i] == pytest.approx(want_tm, abs=2e-3)
        assert scores["rmsd"][i] == pytest.approx(want_rmsd, abs=1e-3)
        assert 0.0 < scores["gdt_ts"][i] <= 1.0


def test_hinge_motion_needs_the_search(chains):
    ca, seq = chains["2gtlA"]
    hinge = len(ca) // 2
    moved = ca.copy()
    moved[hinge:] = (ca[hinge:] - ca[hinge]) @ _rotation([1.0, 2.0, 0.5], 75.0).T + ca[hinge]
    ours = tm_score(moved, ca)
    single_fit = _global_fit_tm(moved, ca)
    assert 0.5 <= ours <= 0.7
    assert ours - single_fit >= 0.1, (ours, single_fit)
    assert ours == pytest.approx(_tmtools(moved, ca, seq, seq)[0], abs=2e-3)  # the same search as the program


def test_masked_residues_count_zero_but_stay_in_length(chains, rng):
    ca, seq = chains["2gtlD"]
    pred = ca + rng.normal(scale=0.8, size=ca.shape)
    observed = rng.random(len(ca)) > 0.25
    ref = ca.copy()
    ref[~observed] = np.nan  # coordinates of unobserved residues are not read
    masked = structure_scores([pred], [ref], [observed])
    full = structure_scores([pred], [ca])
    assert masked["tm_score"][0] < full["tm_score"][0]
    assert masked["gdt_ts"][0] <= observed.mean() + 1e-12  # at most the observed fraction of L
    # tmtools with the unobserved residues as gaps in the prediction: the same L (the reference's length)
    seq_pred = "".join(c for c, keep in zip(seq, observed) if keep)
    gapped = "".join(c if keep else "-" for c, keep in zip(seq, observed))
    want_tm, want_rmsd = _tmtools(pred[observed], ca, seq_pred, seq, aligned=(gapped, seq))
    assert masked["tm_score"][0] == pytest.approx(want_tm, abs=2e-3)
    assert masked["rmsd"][0] == pytest.approx(want_rmsd, abs=1e-3)
    # one residue masked on an exact copy: (L - 1) / L on TM-score and GDT-TS, RMSD still 0
    one_out = np.arange(len(ca)) != 5
    exact = structure_scores([ca], [ca], [one_out])
    assert exact["tm_score"][0] == pytest.approx((len(ca) - 1) / len(ca), abs=1e-9)
    assert exact["gdt_ts"][0] == pytest.approx((len(ca) - 1) / len(ca))


# ---------------------------------------------------------------------------------------------------------------
# every path against tmtools: the float64 exact path, the float32 fast path, torch (numpy kernels on a CPU) and the
# torch kernels a GPU runs (here on the CPU)


def _hinge(ca, degrees, axis=(1.0, 2.0, 0.5)):
    moved = ca.copy()
    hinge = len(ca) // 2
    moved[hinge:] = (ca[hinge:] - ca[hinge]) @ _rotation(axis, degrees).T + ca[hinge]
    return moved


@pytest.fixture(scope="module")
def oracle_pairs(chains):
    """Noisy moved copies and hinge-moved copies of real 2gtl (147-149) and 7ok9 (525) chains, with tmtools'
    fixed-alignment TM-score for each."""
    rng = np.random.default_rng(7)
    preds, refs, want = [], [], []
    for name, sigma in (("2gtlA", 0.5), ("2gtlC", 1.5), ("2gtlD", 2.5), ("7ok9A", 1.0)):
        ca, seq = chains[name]
        turn = _rotation(rng.normal(size=3), rng.uniform(0, 180))
        for pred in (ca + rng.normal(scale=sigma, size=ca.shape), _hinge(ca, 60.0 + 10 * sigma)):
            pred = pred @ turn.T + rng.normal(scale=15.0, size=3)
            preds.append(pred)
            refs.append(ca)
            want.append(_tmtools(pred, ca, seq, seq)[0])
    return preds, refs, np.array(want)


def _paths():
    paths = [("numpy", None, np.float64, 1e-9), ("numpy", None, np.float32, 1e-4)]
    torch = pytest.importorskip("torch")
    paths += [("torch", "cpu", torch.float32, 1e-4), ("torch", "cpu", torch.float64, 1e-9)]
    return paths


@pytest.mark.parametrize("torch_kernels", [False, True], ids=["default-kernels", "torch-kernels"])
@pytest.mark.parametrize("path", range(4), ids=["numpy-f64", "numpy-f32", "torch-f32", "torch-f64"])
def test_every_path_matches_tmtools_on_real_and_hinge_moved_chains(oracle_pairs, monkeypatch, path, torch_kernels):
    backend, device, dtype, tol = _paths()[path]
    if torch_kernels and backend != "torch":
        pytest.skip("the torch kernels belong to the torch backend")
    monkeypatch.setattr(S, "_TORCH_KERNELS_ON_CPU", torch_kernels)
    preds, refs, want = oracle_pairs
    got = structure_scores(preds, refs, backend=backend, device=device, dtype=dtype)["tm_score"]
    assert np.abs(got - want).max() <= tol, np.abs(got - want)
    assert (want[1::2] < 0.8).all() and (want[0::2] > 0.5).all()  # the hinge copies need the search


def test_torch_kernels_equal_numpy_kernels_on_all_three_scores(chains, rng, monkeypatch):
    """The GPU code path, run on the CPU: it counts GDT on every row, the numpy kernels skip rows by a bound."""
    torch = pytest.importorskip("torch")
    preds, refs = _varied_batch(chains, rng)
    want = structure_scores(preds, refs, backend="numpy")
    monkeypatch.setattr(S, "_TORCH_KERNELS_ON_CPU", True)
    got = structure_scores(preds, refs, backend="torch", device="cpu", dtype=torch.float64)
    for key in ("tm_score", "rmsd", "gdt_ts"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_hash_collisions_fall_back_to_exact_grouping(chains, rng, monkeypatch):
    """Distinct selections whose hashes collide are still told apart (every hash made equal here)."""
    preds, refs = _varied_batch(chains, rng)
    want = structure_scores(preds, refs, backend="numpy")
    monkeypatch.setattr(_tm_search, "_HASH", (0, 0, 0))
    got = structure_scores(preds, refs, backend="numpy")
    for key in ("tm_score", "rmsd", "gdt_ts"):
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_row_counts_of_wide_rows():
    """The byte-lane count holds past 255 words per row (2,040+ residues) and on ragged values."""
    rng = np.random.default_rng(3)
    for width in (8, 160, 2040, 2048, 4104):
        below = rng.random((5, width)) < rng.random((5, 1))
        below[0] = True
        assert _tm_search._row_counts(below).tolist() == below.sum(axis=1).tolist()
        for dtype in (np.float32, np.float64):  # short rows: a matrix-vector product instead
            counts = _tm_search._row_counts(below, np.ones(width, dtype=dtype))
            assert np.asarray(counts).tolist() == below.sum(axis=1).tolist()


# ---------------------------------------------------------------------------------------------------------------
# batches and backends


def _varied_batch(chains, rng):
    preds, refs = [], []
    for name, size, sigma in (("2gtlA", 147, 0.5), ("2gtlB", 60, 1.5), ("2gtlC", 149, 2.5), ("2gtlD", 25, 1.0),
                              ("2gtlH", 90, 3.0), ("2gtlE", 12, 0.7)):
        ca = chains[name][0][:size]
        refs.append(ca)
        preds.append(ca @ _rotation(rng.normal(size=3), rng.uniform(0, 180)).T + rng.normal(scale=sigma, size=ca.shape))
    return preds, refs


def test_batched_equals_one_by_one(chains, rng):
    preds, refs = _varied_batch(chains, rng)
    batched = structure_scores(preds, refs, batch_size=4, backend="numpy")
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        alone = structure_scores([pred], [ref], backend="numpy")
        for key in ("tm_score", "rmsd", "gdt_ts"):
            assert batched[key][i] == pytest.approx(alone[key][0], abs=1e-9)
    stacked = structure_scores(np.stack([preds[0], preds[0]]), np.stack([refs[0], refs[0]]), backend="numpy")
    assert stacked["tm_score"] == pytest.approx([batched["tm_score"][0]] * 2, abs=1e-9)


@pytest.mark.parametrize("torch_kernels", [False, True])
def test_numpy_and_torch_agree(chains, rng, monkeypatch, torch_kernels):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(S, "_TORCH_KERNELS_ON_CPU", torch_kernels)
    preds, refs = _varied_batch(chains, rng)
    want = structure_scores(preds, refs, backend="numpy")
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        got = structure_scores([torch.as_tensor(p) for p in preds], refs, backend="torch", device="cpu", dtype=dtype)
        for key in ("tm_score", "gdt_ts"):
            assert got[key] == pytest.approx(want[key], abs=tol), (key, dtype)
        assert got["rmsd"] == pytest.approx(want["rmsd"], abs=1e-6)


def test_numpy_path_runs_without_torch():
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is not installed here')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import numpy as np\n"
        "from multimed_hf.metrics.structure import structure_scores\n"
        "x = np.arange(30.0).reshape(10, 3) ** 1.5\n"
        "assert abs(structure_scores([x], [x])['tm_score'][0] - 1) < 1e-9\n"
        "assert 'torch' not in sys.modules\n"
        "try:\n"
        "    structure_scores([x], [x], backend='torch')\n"
        "except ImportError as error:\n"
        "    assert 'pip install torch' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------------
# the compiled (numba) search against the numpy float64 path


def _numba():
    return pytest.importorskip("numba", reason="numba is not installed: the compiled search (backend='numba') "
                               "is optional (pip install numba); the numpy path is the fallback")


def test_without_numba_the_default_is_numpy_and_numba_asks_for_it():
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "class NoNumba(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'numba':\n"
        "            raise ImportError('numba is not installed here')\n"
        "sys.meta_path.insert(0, NoNumba())\n"
        "import numpy as np\n"
        "from multimed_hf.metrics.structure import structure_scores\n"
        "x = np.arange(30.0).reshape(10, 3) ** 1.5\n"
        "y = x + np.sin(np.arange(30.0)).reshape(10, 3)\n"
        "auto = structure_scores([y], [x])\n"
        "numpy = structure_scores([y], [x], backend='numpy')\n"
        "assert all(auto[k].tolist() == numpy[k].tolist() for k in auto), (auto, numpy)\n"
        "assert 'numba' not in sys.modules\n"
        "try:\n"
        "    structure_scores([x], [x], backend='numba')\n"
        "except ImportError as error:\n"
        "    assert 'pip install numba' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_numba_path_matches_tmtools_on_real_and_hinge_moved_chains(oracle_pairs):
    _numba()
    preds, refs, want = oracle_pairs
    got = structure_scores(preds, refs, backend="numba")["tm_score"]
    assert np.abs(got - want).max() <= 1e-9, np.abs(got - want)


def test_numba_equals_numpy_float64_on_all_three_scores(chains, oracle_pairs, rng):
    """Real 2gtl / 7ok9 pairs (the 7ok9 ones fill more selections than the first hash table holds), hinge
    motions, short chains (12 and 25 residues), masked residues, planar and near-collinear sets."""
    _numba()
    preds, refs, _ = oracle_pairs
    preds, refs, masks = list(preds), list(refs), [None] * len(preds)
    more_preds, more_refs = _varied_batch(chains, rng)
    preds += more_preds
    refs += more_refs
    masks += [rng.random(len(r)) > 0.3 for r in more_refs]
    for n in (1, 2, 3, 4, 5, 9):  # down to one residue: degenerate fits (the SVD fallback), no relief below 4
        ref = rng.normal(scale=5.0, size=(n, 3))
        preds.append(ref + rng.normal(scale=1.0, size=(n, 3)))
        refs.append(ref)
        masks.append(None)
    line = np.linspace(0.0, 60.0, 40)[:, None] * np.array([[1.0, 0.5, -0.2]])  # near-collinear, and planar
    plane = np.concatenate([rng.normal(scale=8.0, size=(40, 2)), np.zeros((40, 1))], axis=1)
    for ref in (line + rng.normal(scale=0.05, size=line.shape), plane):
        preds.append(ref @ _rotation([0.2, 1.0, 0.3], 170.0).T + rng.normal(scale=1.5, size=ref.shape))
        refs.append(ref)
        masks.append(None)
    masks = [np.ones(len(r), dtype=bool) if m is None else m for m, r in zip(masks, refs)]
    want = structure_scores(preds, refs, masks, backend="numpy")
    got = structure_scores(preds, refs, masks, backend="numba")
    for key in ("tm_score", "rmsd", "gdt_ts"):
        assert np.abs(got[key] - want[key]).max() <= 1e-6, (key, np.abs(got[key] - want[key]))
    auto = structure_scores(preds, refs, masks)  # the default picks the compiled search where numba is present
    for key in ("tm_score", "rmsd", "gdt_ts"):
        assert auto[key].tolist() == got[key].tolist(), key


def test_numba_rotation_solve_matches_numpy_solve_and_svd(rng):
    """The scalar rotation of the compiled search against the vectorised one (polished) and SVD, on random,
    planar, near-collinear, half-turn, one-point and empty problems."""
    _numba()
    from multimed_hf.metrics import _tm_numba

    m = 500
    x = rng.normal(size=(m, 6, 3)) * rng.uniform(0.5, 20.0, size=(m, 1, 1))
    x[:50, :, 2] = 0.0
    x[50:100] = rng.normal(size=(50, 6, 1)) * [[[30.0, 0.0, 0.0]]] + rng.normal(size=(50, 6, 3)) * 0.3
    turns = [_rotation(rng.normal(size=3), deg) for deg in rng.uniform(0, 180, m)]
    turns[-40:] = [_rotation(rng.normal(size=3), 180.0)] * 40
    y = np.einsum("mij,mkj->mki", np.array(turns), x) + rng.normal(size=x.shape) * 0.3
    xc, yc = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    h = np.einsum("mia,mib->mab", xc, yc)
    h[-2] = 0.0  # one point, or every point at the centroid
    h[-1] = np.outer([1.0, 2.0, 0.5], [0.3, -1.0, 2.0])  # rank one: two points
    want, _ = rotations([[h[:, a, b] for b in range(3)] for a in range(3)], with_value=False)
    want = np.stack([np.stack(row, axis=-1) for row in want], axis=1)
    got = np.empty_like(want)
    for k in range(m):
        _tm_numba._rotation(np.ascontiguousarray(h[k]), got[k], np.empty((4, 4)))
    assert np.abs(got - want).max() < 1e-12
    assert np.abs(np.linalg.det(got) - 1).max() < 1e-12
    assert np.abs(got[:-2] - kabsch_svd(h[:-2])).max() < 1e-9


def test_numba_constants_follow_the_numpy_search():
    """The compiled kernels hold their constants (a compiled cache does not see another module change)."""
    _numba()
    from multimed_hf.metrics import _tm_numba

    assert _tm_numba._N_REFINE == _tm_search.N_REFINE
    assert _tm_search.GDT_CUTOFFS == (1.0, 2.0, 4.0, 8.0)  # the compare constants of _tm_numba._score
    for n in range(1, 300):
        assert _tm_numba._fragment_lengths(n).tolist() == fragment_lengths(n), n


def test_numba_selection_table_tells_colliding_hashes_apart():
    """Distinct selections under one hash land in distinct slots; the same selection finds its own."""
    _numba()
    from multimed_hf.metrics import _tm_numba

    table = np.full(16, -1, dtype=np.int64)
    store = np.zeros((8, 2), dtype=np.uint64)
    rows = np.array([[1, 0], [2, 0], [1, 1], [0, 7]], dtype=np.uint64)
    key = np.uint64(5)  # every selection given the same hash
    for index, words in enumerate(rows):
        slot = _tm_numba._lookup(table, store, words, key)
        assert table[slot] == -1, index  # not mistaken for an earlier one
        store[index] = words
        table[slot] = index
    for index, words in enumerate(rows):
        assert table[_tm_numba._lookup(table, store, words.copy(), key)] == index


def test_backend_choice_and_numba_options(monkeypatch):
    _numba()
    with pytest.raises(ValueError, match=r"dtype must be float64 \(or None\) for backend='numba'.*float32"):
        structure_scores([GOOD], [GOOD], backend="numba", dtype=np.float32)
    calls, real = [], S._numba_scores
    monkeypatch.setattr(S, "_numba_scores", lambda pairs: calls.append(len(pairs)) or real(pairs))
    structure_scores([GOOD], [GOOD])
    structure_scores([GOOD], [GOOD], dtype="float64")
    structure_scores([GOOD], [GOOD], dtype=np.float32)  # float32 asked for: the numpy path
    structure_scores([GOOD], [GOOD], backend="numpy")
    assert calls == [1, 1]
    monkeypatch.setattr(S, "_numba_search", lambda: None)  # numba not importable
    assert structure_scores([GOOD], [GOOD])["tm_score"][0] == pytest.approx(1.0)  # auto falls back to numpy
    assert calls == [1, 1]
    with pytest.raises(ImportError, match=r"backend='numba' needs numba: pip install numba"):
        structure_scores([GOOD], [GOOD], backend="numba")


def test_tm_align_scores_sequence_independent(chains):
    ca, seq = chains["2gtlA"]
    result = S.tm_align_scores(ca[10:] @ _rotation([1, 0, 0], 50).T, ca, seq[10:], seq)
    assert result["tm_score"] == pytest.approx((len(ca) - 10) / len(ca), abs=0.02)
    assert result["rmsd"] == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"prediction_sequence must be a string of 137 residues"):
        S.tm_align_scores(ca[10:], ca, seq, seq)


# ---------------------------------------------------------------------------------------------------------------
# bad input


GOOD = np.arange(36, dtype=float).reshape(12, 3) ** 1.2


@pytest.mark.parametrize(
    "preds, refs, masks, match",
    [
        ([], [], None, r"predictions is empty"),
        ([GOOD], [GOOD, GOOD], None, r"predictions has 1 structures but references has 2"),
        ([GOOD[:10]], [GOOD], None, r"predictions\[0\] has 10 residues but references\[0\] has 12"),
        ([GOOD, GOOD[:, :2]], [GOOD, GOOD], None, r"predictions\[1\] has shape \(12, 2\); expected \(L, 3\)"),
        ([GOOD], [GOOD[None]], None, r"references\[0\] has shape \(1, 12, 3\)"),
        ([GOOD[:0]], [GOOD[:0]], None, r"predictions\[0\] has no residues"),
        ([GOOD, np.where(np.arange(12)[:, None] == 4, np.nan, GOOD)], [GOOD, GOOD], None,
         r"predictions\[1\] has NaN or inf coordinates at residue 4"),
        ([GOOD], [np.where(np.arange(12)[:, None] == 7, np.inf, GOOD)], None,
         r"references\[0\] has NaN or inf coordinates at residue 7"),
        ([GOOD], [GOOD], [np.ones(11, bool)], r"masks\[0\] has shape \(11,\); expected \(12,\)"),
        ([GOOD], [GOOD], [np.ones(12, bool)] * 2, r"masks has 2 entries but references has 1"),
        ([GOOD], [GOOD], [np.zeros(12, bool)], r"masks\[0\] marks none of the 12 residues as observed"),
        ([GOOD], [GOOD], [np.full(12, 2)], r"masks\[0\] must hold booleans"),
        ([["a", "b", "c"]], [GOOD], None, r"predictions\[0\] is not a numeric coordinate array"),
        (GOOD, GOOD, None, r"predictions as one array must have shape \(N, L, 3\)"),
        (None, [GOOD], None, r"predictions is None"),
    ],
)
def test_bad_input_names_argument_pair_and_expectation(preds, refs, masks, match):
    with pytest.raises(ValueError, match=match):
        structure_scores(preds, refs, masks)


def test_bad_options():
    with pytest.raises(ValueError, match=r"backend must be 'auto', 'numba', 'numpy' or 'torch', got 'jax'"):
        structure_scores([GOOD], [GOOD], backend="jax")
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got 0"):
        structure_scores([GOOD], [GOOD], batch_size=0)
    with pytest.raises(ValueError, match=r"dtype must be float32 or float64 for backend='numpy', got 'float16'"):
        structure_scores([GOOD], [GOOD], dtype="float16")


# ---------------------------------------------------------------------------------------------------------------
# the evaluate module


def test_evaluate_module_loads_by_absolute_path_and_its_examples_hold(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(str(METRIC_DIR))
    result = metric.compute(predictions=[GOOD.tolist()], references=[GOOD.tolist()])
    assert set(result) == {"tm_score", "rmsd", "gdt_ts"} and all(type(v) is float for v in result.values())
    assert result["tm_score"] == pytest.approx(1.0) and result["gdt_ts"] == 1.0
    # the examples of the docstring and of the card, run as written from the repository root
    monkeypatch.chdir(ROOT)
    source = (METRIC_DIR / "tm_score.py").read_text()
    docstring = re.search(r'_KWARGS_DESCRIPTION = """(.*?)"""', source, re.S).group(1)
    card = "\n".join(re.findall(r"```python\n(.*?)```", (METRIC_DIR / "README.md").read_text(), re.S))
    for name, text in (("docstring", docstring), ("card", card)):
        test = doctest.DocTestParser().get_doctest(text, {"evaluate": evaluate}, name, str(METRIC_DIR), 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.summarize(verbose=False).failed == 0, name
        assert len(test.examples) >= 5, name
