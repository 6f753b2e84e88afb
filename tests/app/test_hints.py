"""Where-to-label hints on tiny synthetic fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from refiner.app import hints
from refiner.core.classes import IGNORE


def test_entropy_is_zero_when_sure_and_one_when_uniform():
    p = np.zeros((3, 2, 2), np.float32)
    p[0, 0, 0] = 1
    p[:, 0, 1] = 1 / 3
    p[1, 1, :] = 1
    e = hints.entropy(p)
    assert e[0, 0] < 1e-4 and abs(e[0, 1] - 1) < 1e-4 and e[1].max() < 1e-4


def test_disagreement_counts_who_leaves_the_majority():
    a = np.array([[0, 0, 0]])
    b = np.array([[0, 1, 1]])
    c = np.array([[0, 1, 2]])
    d = hints.disagreement([a, b, c])
    assert d.tolist() == [[0.0, 0.5, 1.0]]
    assert hints.disagreement([a]).tolist() == [[0.0, 0.0, 0.0]]


def test_novelty_is_zero_on_labels_and_grows_with_distance():
    labels = np.full((1, 50), IGNORE, np.uint8)
    labels[0, 0] = 1
    n = hints.novelty(labels, scale=10)
    assert n[0, 0] == 0 and np.all(np.diff(n[0]) > 0)
    assert abs(n[0, 10] - (1 - np.exp(-1))) < 1e-5
    assert np.all(hints.novelty(np.full((4, 4), IGNORE, np.uint8)) == 1)


def fixture():
    """64x64, two classes: the model is unsure in the top-right corner, and the methods disagree
    in the bottom-left; the top-left is already painted."""
    probs = np.zeros((2, 64, 64), np.float32)
    probs[0] = 0.99
    probs[0, :20, 40:] = 0.5
    probs[1] = 1 - probs[0]
    coarse = np.zeros((64, 64), np.uint8)
    rnn = coarse.copy()
    rnn[44:, :20] = 1
    labels = np.full((64, 64), IGNORE, np.uint8)
    labels[:16, :16] = 0
    return probs, [coarse, rnn], labels


def test_need_map_combines_the_signals_and_is_zero_on_labels():
    probs, maps, labels = fixture()
    need = hints.need_map(probs, maps, labels)
    assert need.min() >= 0 and need.max() <= 1
    assert np.all(need[:16, :16] == 0)
    unsure, disputed, calm = need[5:15, 50:60].mean(), need[50:60, 5:15].mean(), need[30:34, 30:34].mean()
    assert unsure > 5 * calm and disputed > 5 * calm
    only_entropy = hints.need_map(probs, maps, labels, hints.HintWeights(entropy=1, disagreement=0))
    assert only_entropy[50:60, 5:15].mean() < 0.1 < 0.5 < only_entropy[5:15, 50:60].mean()
    with pytest.raises(ValueError, match="differ in size"):
        hints.need_map(probs, maps, labels[:10])


def test_suggested_boxes_go_where_needed_never_overlap_nor_cover_labels():
    probs, maps, labels = fixture()
    need = hints.need_map(probs, maps, labels)
    boxes = hints.suggest_boxes(need, labels, n=4, size=16)
    assert len(boxes) == 4
    centres = [(b.row + 8, b.col + 8) for b in boxes[:2]]
    assert any(r < 20 and c >= 40 for r, c in centres) and any(r >= 44 and c < 20 for r, c in centres)
    assert [b.score for b in boxes] == sorted((b.score for b in boxes), reverse=True)
    for i, a in enumerate(boxes):
        assert np.all(labels[a.slices] == IGNORE)
        for b in boxes[i + 1 :]:
            assert a.row + 16 <= b.row or b.row + 16 <= a.row or a.col + 16 <= b.col or b.col + 16 <= a.col
    # no room: a tile full of labels gets no box; too big a box is an error
    assert hints.suggest_boxes(need, np.zeros_like(labels), n=3, size=8) == []
    with pytest.raises(ValueError, match="does not fit"):
        hints.suggest_boxes(need, labels, size=65)


def test_random_boxes_follow_the_same_rules():
    _, _, labels = fixture()
    boxes = hints.random_boxes(labels, n=6, size=12, seed=3)
    assert len(boxes) == 6 and boxes != hints.random_boxes(labels, n=6, size=12, seed=4)
    mask = np.zeros(labels.shape, int)
    for b in boxes:
        assert np.all(labels[b.slices] == IGNORE)
        mask[b.slices] += 1
    assert mask.max() == 1


def test_draw_boxes_outlines_only():
    rgb = np.zeros((20, 20, 3), np.uint8)
    out = hints.draw_boxes(rgb, [hints.Box(2, 3, 10, 8, 0.0)], width=1)
    assert tuple(out[2, 5]) == (255, 0, 255) and tuple(out[6, 6]) == (0, 0, 0) and rgb.max() == 0


def test_spread_sends_the_next_box_to_another_hot_spot():
    need = np.zeros((64, 64), np.float32)
    need[:16, :48] = 1.0  # a long hot strip: room for three boxes side by side
    need[48:, 48:] = 0.8  # a second, slightly cooler spot
    labels = np.full(need.shape, IGNORE, np.uint8)
    piled = hints.suggest_boxes(need, labels, n=2, size=16, spread=0)
    assert all(b.row == 0 for b in piled)
    spread = hints.suggest_boxes(need, labels, n=2, size=16, spread=24)
    assert spread[0].row == 0 and (spread[1].row, spread[1].col) == (48, 48)


def test_a_committee_keeps_the_doubt_an_overconfident_member_hides():
    """An RNN fine-tuned on a few boxes can be sure everywhere; the coarse CNN's doubt (and the
    members' disagreement in probability) still counts through the entropy of their mean."""
    sure = np.zeros((2, 8, 8), np.float32)
    sure[0] = 1.0
    doubtful = sure.copy()
    doubtful[:, :4] = 0.5  # the top four rows
    opposite = 1 - sure
    assert hints.entropy(sure).max() < 1e-4
    e = hints.entropy(hints.consensus([sure, doubtful]))
    assert e[4:].max() < 1e-4 and e[:4].min() > 0.5
    assert np.allclose(hints.entropy(hints.consensus([sure, opposite])), 1, atol=1e-4)  # sure, but opposed
    assert hints.consensus(sure) is sure  # one map: as before
    labels = np.full((8, 8), IGNORE, np.uint8)
    alone = hints.need_map(sure, [], labels, hints.HintWeights(disagreement=0))
    together = hints.need_map([sure, doubtful], [], labels, hints.HintWeights(disagreement=0))
    assert alone.max() < 1e-4 and together[:4].min() > 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        hints.consensus([sure, sure[:, :4]])
