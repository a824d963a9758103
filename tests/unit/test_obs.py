"""Compensated removal and least-squares repair against brute-force linear algebra."""

from __future__ import annotations

import pytest
import torch

from zhprune_hub.prune import obs


def problem(n: int = 400, d_in: int = 12, d_out: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    # Correlated inputs, so that compensation matters.
    mix = torch.randn(d_in, d_in, generator=generator, dtype=torch.float64)
    x = torch.randn(n, d_in, generator=generator, dtype=torch.float64) @ mix
    w = torch.randn(d_out, d_in, generator=generator, dtype=torch.float64)
    return x, w, x.T @ x


def refit_error(x: torch.Tensor, w: torch.Tensor, kept: list[int]) -> float:
    """‖X_K W'ᵀ − X Wᵀ‖² with W' the exact least-squares fit of the kept columns."""
    target = x @ w.T
    solution = torch.linalg.lstsq(x[:, kept], target).solution
    return float(((x[:, kept] @ solution - target) ** 2).sum())


def test_single_column_cost_is_the_error_left_after_refitting():
    x, w, h = problem()
    hinv = torch.linalg.inv(h)
    for j in range(w.shape[1]):
        predicted = float((w[:, j] ** 2).sum() / hinv[j, j])
        kept = [c for c in range(w.shape[1]) if c != j]
        assert predicted == pytest.approx(refit_error(x, w, kept), rel=1e-8)


def test_group_cost_is_the_error_left_after_refitting():
    x, w, h = problem()
    hinv = torch.linalg.inv(h)
    cols = torch.tensor([2, 3, 7])
    kept = [c for c in range(w.shape[1]) if c not in cols.tolist()]
    assert obs.group_cost(w, hinv, cols, None) == pytest.approx(refit_error(x, w, kept), rel=1e-8)


def test_greedy_removal_one_column_per_step_is_exact_greedy():
    x, w, h = problem(seed=1)
    removal = obs.remove_columns(w, torch.linalg.inv(h), 4, steps=4)
    kept = list(range(w.shape[1]))
    for j, cost in zip(removal.order, removal.costs, strict=True):
        # Each pick is the column whose removal (with refit) leaves the least error given the ones already gone.
        errors = {c: refit_error(x, w, [k for k in kept if k != c]) for c in kept}
        best = min(errors, key=errors.get)
        assert j == best
        before = refit_error(x, w, kept)
        kept.remove(j)
        assert cost == pytest.approx(errors[best] - before, rel=1e-6, abs=1e-9)


def test_fewer_steps_still_remove_the_requested_count_of_distinct_columns():
    _, w, h = problem(d_in=40, seed=2)
    removal = obs.remove_columns(w, torch.linalg.inv(h), 25, steps=3)
    assert len(set(removal.order)) == 25


def test_row_weights_change_which_column_goes():
    _, w, h = problem(seed=3)
    plain = obs.remove_columns(w, torch.linalg.inv(h), 1, steps=1).order[0]
    weights = torch.full((w.shape[0],), 1e-6, dtype=torch.float64)
    # Make only the row that column `plain` hurts least count: the choice must move.
    per_row = w**2 / torch.linalg.inv(h).diagonal()
    row = int(per_row[:, plain].argmax())
    weights[row] = 1.0
    weighted = obs.remove_columns(w, torch.linalg.inv(h), 1, row_weight=weights, steps=1).order[0]
    assert weighted == int(per_row[row].argmin())


def test_least_squares_matches_lstsq_with_negligible_damping():
    x, w, h = problem()
    kept = torch.tensor([0, 1, 4, 5, 8, 9, 10])
    fitted, used = obs.least_squares(h, (w @ h)[:, kept], kept, damping=1e-12)
    expected = torch.linalg.lstsq(x[:, kept], x @ w.T).solution.T
    assert used == 1e-12
    torch.testing.assert_close(fitted, expected, rtol=1e-6, atol=1e-8)


def test_singular_hessian_is_dampened_more_until_it_factors():
    h = torch.zeros(4, 4, dtype=torch.float64)
    h[0, 0] = 1.0  # three dead inputs: singular, and the mean diagonal is tiny
    inverse, used = obs.damped_cholesky_inverse(h, damping=0.0)
    assert used > 0.0 and torch.isfinite(inverse).all()
    inverse, used = obs.damped_cholesky_inverse(h, damping=1e-3)
    assert used == 1e-3 and torch.isfinite(inverse).all()


def test_hessian_that_never_factors_is_one_sentence():
    h = -100 * torch.eye(3, dtype=torch.float64)
    with pytest.raises(obs.SolveError, match="singular"):
        obs.damped_cholesky_inverse(h, damping=0.01)


@pytest.mark.parametrize("repair", [True, False])
@pytest.mark.parametrize("damping", [1e-12, 0.05])
def test_refit_errors_equal_the_output_errors_on_the_activations(repair, damping):
    from zhprune_hub.prune.reconstruct import RepairSettings, _refit

    x, w, h = problem(d_in=16, d_out=6, seed=3)
    kept = torch.tensor([0, 2, 3, 5, 8, 9, 11, 12, 15])
    new_weight, record = _refit(w, h, kept, RepairSettings(repair=repair, damping=damping))
    target = x @ w.T
    reference = float((target**2).sum())
    cut = float(((x[:, kept] @ w[:, kept].T - target) ** 2).sum()) / reference
    after = float(((x[:, kept] @ new_weight.T - target) ** 2).sum()) / reference
    assert record.error_cut == pytest.approx(cut, rel=1e-9)
    assert record.error_repaired == pytest.approx(after, rel=1e-9)
    assert (record.error_repaired < record.error_cut) is repair
    if not repair:
        torch.testing.assert_close(new_weight, w[:, kept])


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_stream_corrected_refit_is_the_damped_fit_of_its_target(alpha):
    """With a stream target R, the fit and both errors are those of T = (1 − α)·X Wᵀ + α·R, from activations."""
    from zhprune_hub.prune.reconstruct import RepairSettings, StreamTarget, _refit

    x, w, h = problem(d_in=16, d_out=6, seed=4)
    generator = torch.Generator().manual_seed(9)
    r = x @ w.T + 0.3 * torch.randn(x.shape[0], w.shape[0], generator=generator, dtype=torch.float64)
    stream = StreamTarget.empty(w.shape[0], w.shape[1], torch.device("cpu"))
    stream.add(r[:150], x[:150])  # accumulated in two batches, as the engine does
    stream.add(r[150:], x[150:])
    kept = torch.tensor([0, 1, 4, 5, 7, 9, 10, 13, 14])
    damping = 0.02
    new_weight, record = _refit(w, h, kept, RepairSettings(damping=damping, correction=alpha), stream)

    target = (1 - alpha) * (x @ w.T) + alpha * r
    xk = x[:, kept]
    hk = xk.T @ xk
    shift = damping * float(h.diagonal()[kept].mean())
    expected = torch.linalg.solve(hk + shift * torch.eye(len(kept), dtype=hk.dtype), xk.T @ target).T
    # Σ r xᵀ is accumulated from float32 products (as XᵀX is in the engine): float32 agreement.
    torch.testing.assert_close(new_weight, expected, rtol=1e-5, atol=1e-7)
    reference = float((target**2).sum())
    cut = float(((xk @ w[:, kept].T - target) ** 2).sum()) / reference
    after = float(((xk @ new_weight.T - target) ** 2).sum()) / reference
    assert record.error_cut == pytest.approx(cut, rel=1e-5)
    assert record.error_repaired == pytest.approx(after, rel=1e-5)
    assert record.error_repaired < record.error_cut


def test_stream_correction_is_ignored_without_repair():
    from zhprune_hub.prune.reconstruct import RepairSettings, StreamTarget, _refit

    x, w, h = problem(d_in=10, d_out=4, seed=5)
    stream = StreamTarget.empty(4, 10, torch.device("cpu"))
    stream.add(torch.randn(x.shape[0], 4, dtype=torch.float64), x)
    kept = torch.tensor([0, 2, 3, 6, 9])
    _, plain_record = _refit(w, h, kept, RepairSettings(repair=False))
    sliced, record = _refit(w, h, kept, RepairSettings(repair=False, correction=1.0), stream)
    torch.testing.assert_close(sliced, w[:, kept])
    assert record == plain_record


def test_refit_keeping_every_column_changes_nothing():
    from zhprune_hub.prune.reconstruct import RepairSettings, _refit

    _, w, h = problem()
    new_weight, record = _refit(w, h, torch.arange(w.shape[1]), RepairSettings())
    assert record.error_cut == record.error_repaired == 0.0
    torch.testing.assert_close(new_weight, w)


def test_column_removal_with_compaction_equals_the_full_size_updates():
    """Dropping removed columns from the working matrices changes no pick and no cost."""
    _, w, h = problem(n=600, d_in=40, d_out=7, seed=5)
    hinv = torch.linalg.inv(h)
    removal = obs.remove_columns(w, hinv.clone(), 30, steps=7)  # 30 of 40: it compacts three times

    full_w, full_hinv = w.clone(), hinv.clone()
    alive = torch.ones(40, dtype=torch.bool)
    order, costs = [], []
    chunk = -(-30 // 7)
    while len(order) < 30:
        scores = (full_w**2).sum(dim=0) / full_hinv.diagonal().clamp_min(torch.finfo(h.dtype).tiny)
        scores[~alive] = float("inf")
        picks = torch.topk(scores, min(chunk, 30 - len(order)), largest=False).indices
        order += picks.tolist()
        costs += scores[picks].tolist()
        obs._joint_update(full_w, full_hinv, picks)
        alive[picks] = False
    assert removal.order == order
    assert removal.costs == pytest.approx(costs, rel=1e-9)
