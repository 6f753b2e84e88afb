import numpy as np
import pytest
import torch

from refiner.models.rnn import PROB_FLOOR, RefinerRNN, RNNConfig, probs_to_scores
from tests.helpers import coarse_probs_from_labels


def _inputs(b=2, k=3, h=33, w=29, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, h, w, generator=g)
    probs = torch.softmax(3 * torch.randn(b, k, h, w, generator=g), 1)
    return image, probs


def test_parameter_counts_match_the_paper_architecture():
    k = 3
    m, n = 32 * 25, 32 * 3 * 25  # M_i on a heat map, N_j on the RGB image, 5x5, no bias
    mlp = (64 * 32 + 32) + (32 + 1)  # 64 features -> 32 ReLU -> 1 linear
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(RefinerRNN(RNNConfig(k))) == m + n + k * mlp
    assert count(RefinerRNN(RNNConfig(k, variant="class_agnostic"))) == m + n + mlp
    assert count(RefinerRNN(RNNConfig(k, variant="non_recurrent", iterations=5))) == 5 * (m + n + k * mlp)


def test_recurrent_weights_are_shared_across_iterations():
    short, long = RefinerRNN(RNNConfig(3, iterations=1)), RefinerRNN(RNNConfig(3, iterations=8))
    assert sum(p.numel() for p in short.parameters()) == sum(p.numel() for p in long.parameters())
    # every iteration applies the same parameters: stepping by hand with the one block reproduces it
    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(3, iterations=4))
    image, probs = _inputs()
    maps = net(image, probs, reference=True)
    blk = net.blocks[0]
    u, feats = probs_to_scores(probs), blk.image_features(image)
    for t in range(4):
        u = blk.step(u, feats)
        torch.testing.assert_close(u, maps[t + 1])
    # and the gradient of the shared weights sums the contributions of every iteration
    net.zero_grad()
    maps[-1].sum().backward()
    g_full = net.blocks[0].map_filters.weight.grad.clone()
    net.zero_grad()
    net(image, probs, iterations=1, reference=True)[-1].sum().backward()
    assert not torch.allclose(g_full, net.blocks[0].map_filters.weight.grad)


def test_non_recurrent_variant_owns_parameters_per_iteration():
    net = RefinerRNN(RNNConfig(2, variant="non_recurrent", iterations=3))
    assert len(net.blocks) == 3
    assert net.blocks[0].map_filters.weight.data_ptr() != net.blocks[1].map_filters.weight.data_ptr()
    with pytest.raises(ValueError, match="non-recurrent"):
        net(*_inputs(k=2), iterations=4)


def test_map_filters_are_shared_by_every_class():
    """With the per-class MLPs made equal, swapping two classes' maps swaps the outputs: the
    only class-specific part of the network is the MLP (Eq. 6-7)."""
    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(3))
    blk = net.blocks[0]
    with torch.no_grad():
        for layer in (blk.hidden, blk.output):
            w = layer.weight.view(3, -1, *layer.weight.shape[1:])
            w[1:] = w[0]
            layer.bias.view(3, -1)[1:] = layer.bias.view(3, -1)[0]
    image, probs = _inputs()
    perm = [2, 0, 1]
    out = net(image, probs)[-1]
    out_perm = net(image, probs[:, perm])[-1]
    torch.testing.assert_close(out_perm, out[:, perm], rtol=1e-4, atol=1e-4)
    # the class-agnostic variant is equivariant by construction
    agn = RefinerRNN(RNNConfig(3, variant="class_agnostic"))
    torch.testing.assert_close(agn(image, probs[:, perm])[-1], agn(image, probs)[-1][:, perm], rtol=1e-4, atol=1e-4)


def test_class_specific_mlps_differ_between_classes():
    torch.manual_seed(0)
    net = RefinerRNN(RNNConfig(3))
    image, probs = _inputs()
    perm = [2, 0, 1]
    assert not torch.allclose(net(image, probs[:, perm])[-1], net(image, probs)[-1][:, perm], atol=1e-3)


@pytest.mark.parametrize("variant", ["class_specific", "class_agnostic", "non_recurrent"])
def test_fused_formulation_equals_the_equations(variant):
    torch.manual_seed(1)
    net = RefinerRNN(RNNConfig(4, variant=variant, iterations=5))
    for p in net.parameters():  # random weights, not just the initialisation
        torch.nn.init.normal_(p, std=0.2)
    image, probs = _inputs(k=4, h=41, w=23, seed=3)
    for a, b in zip(net(image, probs), net(image, probs, reference=True), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_untrained_rnn_is_close_to_identity(scene):
    """Zero-centred Glorot weights and a residual update: untrained, each iteration changes the
    scores by a fraction of their size and keeps almost every pixel's class (averaged over inits)."""
    probs = torch.from_numpy(coarse_probs_from_labels(scene.osm, 3))[None]
    image = (torch.from_numpy(scene.image)[None] - 0.45) / 0.2
    first, last, rel = [], [], []
    for seed in range(4):
        torch.manual_seed(seed)
        with torch.no_grad():
            maps = RefinerRNN(RNNConfig(3))(image, probs)
        u0 = maps[0]
        first.append(float((maps[1].argmax(1) == u0.argmax(1)).float().mean()))
        last.append(float((maps[-1].argmax(1) == u0.argmax(1)).float().mean()))
        rel.append(float((maps[1] - u0).norm() / u0.norm()))
    assert np.mean(first) > 0.95 and min(first) > 0.9
    assert np.mean(last) > 0.8
    assert max(rel) < 0.5


def test_scores_are_centred_log_probabilities():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0]]).T.reshape(1, 4, 1, 1)
    u = probs_to_scores(probs)
    assert abs(float(u.sum())) < 1e-5
    expected = torch.softmax(u, 1)
    clipped = probs.clamp_min(PROB_FLOOR)
    torch.testing.assert_close(expected, clipped / clipped.sum(), rtol=1e-5, atol=1e-6)


def test_receptive_field_halo():
    assert RNNConfig(3, iterations=5).halo == 10
    assert RNNConfig(3, iterations=3, kernel_size=3).halo == 3
