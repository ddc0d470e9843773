"""Does `--compile` compute the same thing? Compiled vs eager sin over SIREN-sized arguments, and the compiled
full forward against the eager one while a SIREN 5×256 trains (20% uniform batches, Adam, lr 1e-4).

    python -m benchmark.bench_compile_check --image PNG [--steps 600] [--out results/bench]

Prints the errors and writes results/bench/compile-check-<gpu>.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import datasets
from benchmark.bench_speed import make_task
from benchmark.store import atomic_write_text


def sin_errors(device) -> dict:
    """Max |error| against float64 sin, for |x| up to a few multiples of SIREN's first pre-activations."""
    x = torch.linspace(-400, 400, 1_000_001, device=device)
    exact = torch.sin(x.double())
    eager, compiled = torch.sin(x), torch.compile(lambda t: torch.sin(t))(x)
    out = {}
    for lim in (3.2, 30.0, 100.0, 400.0):
        m = x.abs() <= lim
        out[str(lim)] = {"eager": float((eager - exact)[m].abs().max()),
                         "compiled": float((compiled - exact)[m].abs().max())}
    return out


def forward_during_training(img, device, steps: int) -> list[dict]:
    h, w = img.shape[:2]
    task = make_task(img, device, seed=0)  # SIREN 5×256, seeded initialisation and sampling generator
    model, coords, targets, gen = task.model, task.coords, task.targets, task.generator
    predict = torch.compile(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def psnr(p):
        return float(-10 * torch.log10(((p.clamp(0, 1) - targets) ** 2).mean()))

    rows = []
    for t in range(steps + 1):
        if t % 100 == 0:
            with torch.no_grad():
                a, b = model(coords), predict(coords)
            rows.append({"step": t, "eager_psnr": psnr(a), "compiled_psnr": psnr(b),
                         "max_abs_diff": float((a - b).abs().max())})
            print(f"step {t:4d}: eager PSNR {rows[-1]['eager_psnr']:.3f}  compiled {rows[-1]['compiled_psnr']:.3f}  "
                  f"max |compiled - eager| {rows[-1]['max_abs_diff']:.2e}", flush=True)
        idx = torch.randperm(h * w, device=device, generator=gen)[: h * w // 5]
        loss = (model(coords[idx]) - targets[idx]).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--out", default="results/bench")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    errors = sin_errors(device)
    for lim, e in errors.items():
        print(f"sin, |x| <= {lim:>5}: max error eager {e['eager']:.2e}  compiled {e['compiled']:.2e}")
    img = datasets.load_image(args.image)
    report = {"gpu": gpu, "torch": torch.__version__, "image": Path(args.image).name, "sin_max_error": errors,
              "forward_during_training": forward_during_training(img, device, args.steps)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"compile-check-{gpu.replace(' ', '_')}.json"
    atomic_write_text(json.dumps(report, indent=1), path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
