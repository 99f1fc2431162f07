"""Equivalences of the masked delta: all off == base, all on == fine-tuned, merged == masked."""

from __future__ import annotations

import pytest
import torch

from training.lcdd.masked_model import attach_masks
from training.lcdd.masks import MaskSet, straight_through
from training.models.roles import MASK_GROUPS, _gqa_expand, find_roles
from training.models.tiny import FAMILIES, tiny_model


def perturbed(model, seed=1, scale=0.05):
    """A copy of `model` whose projection weights (and biases) moved: a stand-in SFT model."""
    ft = type(model)(model.config)
    ft.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for roles in find_roles(ft):
            for proj in roles.projections:
                for p in (proj.module.weight, getattr(proj.module, "bias", None)):
                    if p is not None:
                        p.add_(torch.randn(p.shape, generator=gen) * scale)
    return ft.eval()


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(params=FAMILIES)
def pair(request):
    base, _ = tiny_model(request.param)
    return base, perturbed(base)


IDS = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(0))


def test_all_masks_off_is_base_exactly(pair):
    base, ft = pair
    want = logits(base, IDS)
    masked = attach_masks(ft, base)
    masked.masks.fill(-3.0)
    assert torch.equal(logits(masked.model, IDS), want)


def test_all_masks_on_is_fine_tuned_exactly(pair):
    base, ft = pair
    want = logits(ft, IDS)
    masked = attach_masks(ft, base)
    masked.masks.fill(3.0)
    assert torch.equal(logits(masked.model, IDS), want)


def test_merged_carrier_equals_masked_forward(pair):
    base, ft = pair
    masked = attach_masks(ft, base, init_mean=0.0, init_std=1.0)  # about half the units on
    assert 0.3 < masked.masks.density() < 0.7
    want = logits(masked.model, IDS)
    merged = masked.merge()
    assert not any(n for n, _ in merged.named_parameters() if "parametrizations" in n)
    assert torch.equal(logits(merged, IDS), want)


def test_masks_cover_eight_groups_per_layer():
    base, _ = tiny_model("llama", hidden=64)
    masks = MaskSet(find_roles(base))
    assert masks.num_units == 2 * (64 * 4 + 128 + 64 + 32 + 32)
    assert set(masks.group_density()) == set(MASK_GROUPS)
    assert masks.density() > 0.99  # init N(1.5, 0.5): starts from (nearly) full SFT


def test_straight_through_is_hard_forward_sigmoid_backward():
    theta = torch.tensor([-2.0, -0.1, 0.2, 3.0], requires_grad=True)
    m = straight_through(theta)
    assert m.tolist() == [0.0, 0.0, 1.0, 1.0]
    m.sum().backward()
    s = torch.sigmoid(theta.detach())
    assert torch.allclose(theta.grad, s * (1 - s))


def test_gqa_expansion_maps_query_heads_to_kv_heads():
    idx = _gqa_expand(num_heads=4, num_kv_heads=2, head_dim=2)
    # heads 0,1 read kv head 0 (v units 0,1); heads 2,3 read kv head 1 (v units 2,3)
    assert idx.tolist() == [0, 1, 0, 1, 2, 3, 2, 3]


def test_keep_top_sets_exact_density():
    base, _ = tiny_model("llama")
    masks = MaskSet(find_roles(base), init_mean=0.0, init_std=1.0)
    masks.keep_top(0.25)
    assert masks.density() == pytest.approx(0.25, abs=1 / masks.num_units)
    # the kept units are the largest logits: every kept θ exceeds every dropped θ
    logits_ = masks.all_logits()
    assert logits_[logits_ > 0].min() > logits_[logits_ < 0].max()


def test_masked_o_proj_columns_follow_v_mask():
    """Turning one kv head's v units off removes the delta from every o_proj column reading it."""
    base, _ = tiny_model("llama")
    ft = perturbed(base)
    masked = attach_masks(ft, base)
    masked.masks.fill(3.0)
    with torch.no_grad():
        masked.masks.theta["0_v"][:16] = -3.0  # kv head 0 of 2 (head_dim 16)
    o = masked.model.model.layers[0].self_attn.o_proj
    w, w_base, w_ft = (
        o.weight,
        base.model.layers[0].self_attn.o_proj.weight,
        ft.model.layers[0].self_attn.o_proj.parametrizations.weight.original,
    )
    # query heads 0, 1 read kv head 0: their 32 columns are at base, the rest fine-tuned
    assert torch.equal(w[:, :32], w_base[:, :32])
    assert torch.equal(w[:, 32:], w_ft[:, 32:])


def test_delta_init_ranks_units_by_the_delta_they_gate():
    base, _ = tiny_model("llama")
    ft = type(base)(base.config)
    ft.load_state_dict(base.state_dict())
    with torch.no_grad():
        # only hidden unit 5 of layer 0's MLP changes (its gate/up rows and down column)
        mlp = ft.model.layers[0].mlp
        mlp.gate_proj.weight[5] += 1.0
        mlp.down_proj.weight[:, 5] += 1.0
        ft.model.layers[0].mlp.up_proj.weight[7] += 0.01
    masked = attach_masks(ft.eval(), base, init_from_delta=True)
    theta = masked.masks.theta["0_ffn_hidden"]
    assert theta.argmax() == 5
    assert theta[7] > theta[0]  # a small delta still ranks above none
    assert theta.mean().item() == pytest.approx(1.5, abs=1e-5)
