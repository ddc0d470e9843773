"""Models: shapes, the papers' parameter counts, learning rates, fixed/frozen parts, and NINT's NTK for each
architecture (checked against an explicit real Jacobian, complex WIRE included)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev

from benchmark.config import RunConfig
from benchmark.errors import BenchError
from benchmark.fit import fit
from benchmark.models import MODELS, build_model, count_parameters
from benchmark.ntk import ntk_scores
from benchmark.task import Task, coordinate_grid
from conftest import tiny_image
from strategies import resolve

COUNTS = {  # parameter counts of the reference architectures, for each model's defaults (SIREN: the NINT/INT 5 × 256 layout)
    "siren": 264_707, "finer": 198_915, "gauss": 198_915, "pemlp": 209_155, "ffn": 132_355,
    "relu-mlp": 198_915, "wire": 199_287,
}
LRS = {"siren": 1e-4, "finer": 5e-4, "gauss": 5e-3, "wire": 5e-3, "pemlp": 1e-3, "ffn": 1e-3, "relu-mlp": 1e-3}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_forward_shape_count_and_lr(name):
    torch.manual_seed(0)
    model = build_model(name)
    out = model(torch.rand(7, 2) * 2 - 1)
    assert out.shape == (7, 3) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert count_parameters(model) == COUNTS[name]
    assert MODELS[name].lr == LRS[name]
    small = build_model(name, {"depth": 2, "width": 16})
    assert small(torch.zeros(3, 2)).shape == (3, 3) and count_parameters(small) < count_parameters(model)


def test_siren_evos_layout_count():
    assert count_parameters(build_model("siren", {"depth": 4, "bias_init": "default"})) == 198_915


def test_wire_complex_layers_and_frozen_constants():
    model = build_model("wire")
    params = dict(model.named_parameters())
    assert not params["body.0.linear.weight"].is_complex()  # first layer real
    assert all(p.is_complex() for n, p in params.items() if not n.startswith("body.0."))
    assert sum(p.numel() for p in params.values()) == 99_915  # numel; 199,287 real degrees of freedom
    assert params["body.1.linear.weight"].shape == (181, 181)
    assert model.body[1].omega0 == 30.0 and model.body[1].s0 == 30.0
    assert not any("omega" in n or "s0" in n for n in params)


def test_ffn_features_are_a_fixed_buffer():
    torch.manual_seed(0)
    model = build_model("ffn")
    assert "B" in dict(model.named_buffers()) and "B" not in dict(model.named_parameters())
    assert model.B.shape == (2, 128) and 7 < float(model.B.std()) < 13  # σ = 10
    before = model.B.clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.rand(16, 2)).pow(2).mean().backward()
    opt.step()
    assert torch.equal(model.B, before)


def test_pemlp_encoding_has_42_dims():
    model = build_model("pemlp")
    assert model.mlp[0].in_features == 42 and torch.equal(model.freqs, 2.0 ** torch.arange(10.0))


def test_finer_scale_is_held_constant_in_both_modes():
    """FINER's (|z|+1) carries no gradient: backward and forward mode give the same derivative."""
    layer = build_model("finer", {"depth": 1, "width": 4}).body[0]
    x = torch.tensor([0.3, -0.2])
    with torch.no_grad():
        z = layer.linear(x)
        s = z.abs() + 1.0
        expected = (30.0 * s * torch.cos(30.0 * s * z))[:, None] * layer.linear.weight  # d/dx with s constant
    assert torch.allclose(torch.func.jacrev(layer)(x), expected, rtol=1e-5)
    assert torch.allclose(torch.func.jacfwd(layer)(x), expected, rtol=1e-5)


def test_bad_model_parameters():
    with pytest.raises(BenchError, match=r"depth in \[1, 1000\]"):
        build_model("gauss", {"depth": 0})
    with pytest.raises(BenchError, match="no parameter"):
        build_model("wire", {"w0": 20})


def _task(model, h=5, w=4):
    img = tiny_image(h, w)
    targets = torch.from_numpy(img / 255.0).reshape(-1, 3).to(torch.float64)
    return Task(model, coordinate_grid(h, w).double(), targets, img, h, w, 10, 0.2, "constant", "dense",
                torch.Generator().manual_seed(0))


def _as_float64(model):
    for p in model.parameters():
        p.data = p.data.to(torch.complex128 if p.is_complex() else torch.float64)
    for name, b in model.named_buffers():
        b.data = b.data.to(torch.float64)
    return model


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_ntk_score_matches_explicit_real_jacobian(name):
    """K·g from one VJP and one JVP equals J(Jᵀg) with J over real degrees of freedom (a complex entry = 2)."""
    torch.manual_seed(0)
    model = _as_float64(build_model(name, {"depth": 2, "width": 8}))
    task = _task(model)
    score, pred = ntk_scores(task, "kg")
    assert score.shape == (20,) and torch.isfinite(score).all() and torch.allclose(pred, task.forward_full())
    params = {n: p.detach() for n, p in model.named_parameters()}
    real = {n: torch.view_as_real(p) if p.is_complex() else p for n, p in params.items()}

    def f(rp):
        p = {n: torch.view_as_complex(rp[n]) if params[n].is_complex() else rp[n] for n in rp}
        return functional_call(model, {**p, **dict(model.named_buffers())}, (task.coords,)).reshape(-1)

    jac = jacrev(f)(real)
    J = torch.cat([jac[n].reshape(jac[n].shape[0], -1) for n in real], dim=1)
    assert J.shape[1] == count_parameters(model)
    g = f(real) - task.targets.reshape(-1)
    expected = (J @ (J.T @ g)).reshape(-1, 3).pow(2).sum(dim=1)
    assert torch.allclose(score, expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", sorted(set(COUNTS) - {"siren"}))
def test_nint_fits_each_model(name):
    _, params = resolve("nint")
    cfg = RunConfig(image="tiny", image_sha256="x", strategy="nint", params=params, iters=3, eval_every=3,
                    model=name, model_params={"depth": 2, "width": 16}, lr=MODELS[name].lr)
    m = fit(cfg, tiny_image()).metrics
    assert np.isfinite(m["psnr"]).all()


def test_cli_runs_each_model_with_its_lr_and_each_variant(tmp_path, capsys):
    import run_benchmark
    from benchmark.store import load

    out = str(tmp_path / "r")
    code = run_benchmark.main(["--suite", "builtin", "--max-images", "1", "--max-size", "12", "--iters", "2",
                               "--strategies", "uniform", "--model", "relu-mlp,gauss", "--model-param", "width=8",
                               "--out", out, "--no-progress", "--no-lpips"])
    assert code == 0
    text = capsys.readouterr().out
    assert 'with relu-mlp {"width": 8}' in text and 'with gauss {"width": 8}' in text
    runs, _ = load(out)
    assert dict(zip(runs["model"], runs["lr"])) == {"relu-mlp": 1e-3, "gauss": 5e-3}
    assert run_benchmark.main(["--model", "siren,bogus", "--out", out]) == 2
    assert "unknown model 'bogus'" in capsys.readouterr().err
